//! Scripting and workflows: what the Python client and `scitqctl workflow` need from the
//! API (deleting one task, moving tasks between batches, executions across tasks, stopping
//! a batch before it has tasks), through `scitqctl` against the real binaries.

use std::time::Duration;

use scitq_tests::{
    Agent, Backend, Client, S3Server, Server, ServerOpts, as_id, describe, str_field, touch,
};
use serde_json::Value;

const CONNECT: Duration = Duration::from_secs(60);

fn ids_of(values: &[Value], key: &str) -> Vec<i64> {
    values.iter().map(|v| as_id(&v[key])).collect()
}

fn tasks_are_deleted_moved_between_batches_and_executions_listed_across_tasks(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "scripted", 2, &[]);
    let worker = c.wait_worker_online("scripted", CONNECT);

    // A batch stopped before it has any task: what is added to it waits.
    c.ctl_ok(["batch", "stop", "later"]);
    let batches = c.batches();
    let later = batches
        .iter()
        .find(|b| b["name"] == "later")
        .expect("batch");
    assert_eq!(later["stopped"], true, "{later}");
    let held = c.create_sh("later", "echo held", &[]);
    let moved = c.create_sh("later", "echo moved", &[]);
    assert_eq!(c.status(held), "pending");

    // Moved to a running batch, a task runs there; the one left behind keeps waiting.
    let out = c.ctl_json(["task", "edit", &moved.to_string(), "--new-batch", "now"]);
    assert_eq!(out[0]["batch"], "now", "{out}");
    c.wait_task(moved, "succeeded", CONNECT);
    assert_eq!(c.status(held), "pending", "a stopped batch starts nothing");
    let blank = c.ctl(["task", "edit", &held.to_string(), "--new-batch", " "]);
    assert!(!blank.status.success(), "{}", describe(&blank));
    assert!(
        String::from_utf8_lossy(&blank.stderr).contains("batch name is empty"),
        "{}",
        describe(&blank)
    );

    // Executions across tasks, by batch, state and worker.
    let failing = c.create_sh("now", "echo bad; exit 4", &[]);
    c.wait_task(failing, "failed", CONNECT);
    let all = c.ctl_json(["task", "executions", "--batch", "now"]);
    let all = all.as_array().expect("array").clone();
    assert_eq!(ids_of(&all, "task_id"), vec![moved, failing], "{all:?}");
    let failed = c.ctl_json(["task", "executions", "--state", "failed", "--batch", "now"]);
    assert_eq!(failed[0]["task_id"], failing, "{failed}");
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
    let by_worker = c.ctl_json(["task", "executions", "--worker", &worker.to_string()]);
    assert_eq!(by_worker.as_array().map(Vec::len), Some(2), "{by_worker}");
    let one = c.ctl_json(["task", "executions", "--batch", "now", "--limit", "1"]);
    assert_eq!(
        ids_of(one.as_array().expect("array"), "task_id"),
        vec![moved]
    );
    let unknown = c.ctl(["task", "executions", "--batch", "nowhere"]);
    assert!(!unknown.status.success(), "{}", describe(&unknown));

    // Deleting: refused while a task not ended depends on it, then gone with its
    // executions; a running task is canceled on its worker first.
    let dependant = c.create(&[
        "--batch",
        "later",
        "--depends-on",
        &held.to_string(),
        "--",
        "true",
    ]);
    let refused = c.ctl(["task", "delete", &held.to_string()]);
    assert!(!refused.status.success(), "{}", describe(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("task(s) {dependant} depend on it")),
        "{stderr}"
    );
    c.ctl_ok(["task", "delete", &dependant.to_string()]);
    c.ctl_ok(["task", "delete", &held.to_string()]);
    c.ctl_ok(["task", "delete", &failing.to_string()]);
    let left = c.ctl_json(["task", "executions", "--batch", "now"]);
    assert_eq!(
        ids_of(left.as_array().expect("array"), "task_id"),
        vec![moved]
    );
    assert!(c.tasks(&["--batch", "later"]).is_empty());
    let again = c.ctl(["task", "delete", &held.to_string()]);
    assert!(!again.status.success(), "{}", describe(&again));

    let sleeper = c.create_sh("now", "sleep 600", &[]);
    c.wait_task(sleeper, "running", CONNECT);
    c.ctl_ok(["task", "delete", &sleeper.to_string()]);
    // Both slots are free again: two tasks run at once.
    let flag = c.scratch_path("both");
    let wait = format!(
        "touch {f}.$$; while [ $(ls {f}.* | wc -l) -lt 2 ]; do sleep 0.05; done",
        f = flag.display()
    );
    let a = c.create_sh("now", &wait, &[]);
    let b = c.create_sh("now", &wait, &[]);
    c.wait_task(a, "succeeded", CONNECT);
    c.wait_task(b, "succeeded", CONNECT);
}

/// The example of docs/workflow.md, as written there.
fn documented_example() -> String {
    documented_block(0)
}

/// The `n`th yaml block of docs/workflow.md.
fn documented_block(n: usize) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/workflow.md"))
        .expect("read docs/workflow.md");
    let start = doc
        .match_indices("```yaml\n")
        .nth(n)
        .map(|(at, _)| at + 8)
        .unwrap_or_else(|| panic!("yaml block {n} in docs/workflow.md"));
    let end = start + doc[start..].find("```").expect("the end of the yaml block");
    doc[start..end].to_owned()
}

/// The one task of `batch` named `name`.
fn task_named(c: &Client, batch: &str, name: &str) -> i64 {
    let found = c.tasks(&["--batch", batch, "--name", name]);
    assert_eq!(found.len(), 1, "{found:?}");
    as_id(&found[0]["id"])
}

fn the_documented_workflow_runs_and_workflows_are_listed_stopped_and_deleted(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "yaml", 2, &[]);
    c.wait_worker_online("yaml", CONNECT);
    let file = c.scratch_file("wordcount.yaml", &documented_example());
    let store = format!("store=file://{}", c.scratch_path("store").display());

    // A dry run shows the tasks and creates nothing.
    let plan = c.ctl_json([
        "workflow",
        "run",
        file.to_str().unwrap(),
        "--param",
        &store,
        "--dry-run",
    ]);
    let names: Vec<&str> = plan
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "write.one",
            "write.three",
            "count.one",
            "count.three",
            "total"
        ]
    );
    assert_eq!(
        plan[4]["depends_on"],
        serde_json::json!(["count.one", "count.three"])
    );
    assert!(c.batches().is_empty(), "a dry run creates nothing");

    let ids = c.ctl_json(["workflow", "run", file.to_str().unwrap(), "--param", &store]);
    assert_eq!(ids.as_array().map(Vec::len), Some(5), "{ids}");
    let total = task_named(&c, "wordcount.total", "total");
    c.wait_task(total, "succeeded", CONNECT);
    assert_eq!(
        c.output(total),
        "10\n",
        "one\\n and three\\n are 4 + 6 bytes"
    );

    let listed = c.ctl_json(["workflow", "list"]);
    assert_eq!(listed[0]["name"], "wordcount", "{listed}");
    assert_eq!(listed[0]["steps"], 3, "{listed}");
    assert_eq!(listed[0]["counts"]["succeeded"], 5, "{listed}");
    let shown = c.ctl_json(["workflow", "show", "wordcount"]);
    let steps: Vec<&str> = shown
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["wordcount.count", "wordcount.total", "wordcount.write"]
    );

    // Running it again over itself is refused; stop and go act on every step.
    let again = c.ctl(["workflow", "run", file.to_str().unwrap(), "--param", &store]);
    assert!(!again.status.success(), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("workflow wordcount exists already"),
        "{}",
        describe(&again)
    );
    c.ctl_ok(["workflow", "stop", "wordcount"]);
    let stopped = c.ctl_json(["workflow", "list"]);
    assert_eq!(stopped[0]["state"], "stopped", "{stopped}");
    c.ctl_ok(["workflow", "go", "wordcount"]);
    c.ctl_ok(["workflow", "delete", "wordcount"]);
    assert!(c.batches().is_empty());
    let gone = c.ctl(["workflow", "show", "wordcount"]);
    assert!(!gone.status.success(), "{}", describe(&gone));
}

const FAILING: &str = "\
name: wf
params:
  store: file:///nowhere
samples:
  letters:
    inline: [a, b, c]
steps:
  - name: gen
    foreach: letters
    command: test {{ sample }} != b || exit 1; echo {{ sample }}{{ sample }}{{ sample }} > $OUTPUT/{{ sample }}.txt
    output: '{{ store }}/gen/{{ sample }}/'
  - name: count
    foreach: letters
    depends: [gen]
    command: wc -c < $INPUT/{{ sample }}.txt | tr -d ' ' > $OUTPUT/{{ sample }}.count
    input: ['{{ outputs.gen }}']
    output: '{{ store }}/count/{{ sample }}/'
  - name: total
    depends: [count]
    command: cat $INPUT/*.count | awk '{s += $1} END {print s}'
    input: ['{{ outputs.count }}']
";

fn a_failed_task_relaunched_with_a_new_command_lets_its_dependants_complete(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "yaml", 3, &[]);
    c.wait_worker_online("yaml", CONNECT);
    let file = c.scratch_file("failing.yaml", FAILING);
    let store = format!("store=file://{}", c.scratch_path("store").display());
    c.ctl_ok(["workflow", "run", file.to_str().unwrap(), "--param", &store]);

    let gen_b = task_named(&c, "wf.gen", "gen.b");
    let count_b = task_named(&c, "wf.count", "count.b");
    let total = task_named(&c, "wf.total", "total");
    c.wait_task(gen_b, "failed", CONNECT);
    c.wait_task(count_b, "canceled", CONNECT);
    c.wait_task(total, "canceled", CONNECT);
    c.wait_task(task_named(&c, "wf.count", "count.c"), "succeeded", CONNECT);

    c.ctl_ok([
        "task",
        "relaunch",
        &gen_b.to_string(),
        "--command",
        "echo bbb > $OUTPUT/b.txt",
    ]);
    c.wait_task(total, "succeeded", CONNECT);
    assert_eq!(
        c.output(total),
        "12\n",
        "aaa, bbb and ccc with their newlines"
    );
    let shown = c.ctl_json(["workflow", "show", "wf"]);
    for step in shown.as_array().expect("array") {
        assert_eq!(step["counts"].get("failed"), None, "{shown}");
        assert_eq!(step["counts"].get("canceled"), None, "{shown}");
    }
}

fn resume_keeps_what_succeeded_and_runs_the_failed_part_again(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "yaml", 3, &[]);
    c.wait_worker_online("yaml", CONNECT);
    // gen.b fails until the flag exists; the commands stay the same.
    let flag = c.scratch_path("fixed");
    let yaml = FAILING.replace(
        "test {{ sample }} != b || exit 1;",
        &format!(
            "test -e {} || test {{{{ sample }}}} != b || exit 1;",
            flag.display()
        ),
    );
    let file = c.scratch_file("resume.yaml", &yaml);
    let store = format!("store=file://{}", c.scratch_path("store").display());
    let run = |resume: bool| {
        let mut args = vec!["workflow", "run", file.to_str().unwrap(), "--param", &store];
        if resume {
            args.push("--resume");
        }
        c.ctl(&args)
    };
    assert!(run(false).status.success());
    let gen_a = task_named(&c, "wf.gen", "gen.a");
    c.wait_task(task_named(&c, "wf.total", "total"), "canceled", CONNECT);
    c.wait_task(task_named(&c, "wf.count", "count.c"), "succeeded", CONNECT);
    c.wait_task(task_named(&c, "wf.count", "count.a"), "succeeded", CONNECT);

    touch(&flag);
    let out = run(true);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("workflow wf resumed: 4 task(s) kept, 3 to run"),
        "{stderr}"
    );
    let total = task_named(&c, "wf.total", "total");
    c.wait_task(total, "succeeded", CONNECT);
    assert_eq!(c.output(total), "12\n");
    assert_eq!(
        task_named(&c, "wf.gen", "gen.a"),
        gen_a,
        "kept, not run again"
    );
    assert_eq!(
        c.tasks(&["--batch", "wf.gen"]).len(),
        3,
        "the failed one was replaced"
    );
    let shown = c.task(gen_a);
    let execution = as_id(&shown["executions"][0]["id"]);
    assert_eq!(shown["executions"].as_array().map(Vec::len), Some(1));
    let explained = c.ctl_ok(["task", "explain", &gen_a.to_string()]);
    assert!(
        explained.contains(&format!("kept by resume: execution {execution} ")),
        "{explained}"
    );
}

/// One step reading a local file (the store gives no etag: size and modification time
/// say whether it changed), one reading an S3 object (its etag says it).
const INPUTS: &str = "\
name: ids
params:
  local: file:///nowhere
steps:
  - name: fs
    command: cat $INPUT/local.txt
    input: '{{ local }}'
  - name: s3
    command: cat $INPUT/object.txt
    input: lab:data/object.txt
";

/// Resume keeps a task only while its inputs hold what its execution read (issue 16): a
/// file rewritten under its old modification time runs again, an object written again
/// with the same content does not.
fn resume_compares_what_the_inputs_hold_not_their_times(backend: Backend) {
    let s3 = S3Server::start(&["data"]);
    s3.put_object("data", "object.txt", b"abc\n");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("rclone.conf");
    std::fs::write(&conf, s3.rclone_section("lab")).unwrap();
    let local = dir.path().join("local.txt");
    let then = std::time::SystemTime::now() - Duration::from_secs(3600);
    let write_local = |content: &str| {
        std::fs::write(&local, content).unwrap();
        let file = std::fs::File::options().write(true).open(&local).unwrap();
        file.set_modified(then).unwrap();
    };
    write_local("abc\n");
    let opts = ServerOpts::default()
        .arg("--rclone-config")
        .arg(&conf.display().to_string());
    let server = Server::start_on(backend, opts);
    let c = server.client();
    let _agent = Agent::start(&server, "inputs", 2, &[]);
    c.wait_worker_online("inputs", CONNECT);
    let file = c.scratch_file("inputs.yaml", INPUTS);
    let param = format!("local=file://{}", local.display());
    let run = |resume: bool, summary: &str| {
        let mut args = vec!["workflow", "run", file.to_str().unwrap(), "--param", &param];
        if resume {
            args.push("--resume");
        }
        let out = c.ctl(&args);
        assert!(out.status.success(), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(summary), "{stderr}");
        let fs = task_named(&c, "ids.fs", "fs");
        let s3 = task_named(&c, "ids.s3", "s3");
        c.wait_task(fs, "succeeded", CONNECT);
        c.wait_task(s3, "succeeded", CONNECT);
        (fs, s3)
    };
    let (fs, s3_task) = run(false, "workflow ids created: 2 task(s)");

    // Other content under the same modification time; the same content written again.
    write_local("abcdefgh\n");
    s3.put_object("data", "object.txt", b"abc\n");
    let (fs_again, s3_kept) = run(true, "workflow ids resumed: 1 task(s) kept, 1 to run");
    assert_ne!(fs_again, fs, "the rewritten file is read again");
    assert_eq!(c.output(fs_again), "abcdefgh\n");
    assert_eq!(s3_kept, s3_task, "the same object is not read again");

    // Nothing changed: both kept.
    let kept = run(true, "workflow ids resumed: 2 task(s) kept, 0 to run");
    assert_eq!(kept, (fs_again, s3_task));

    // Another content of the same size: another etag.
    s3.put_object("data", "object.txt", b"xyz\n");
    let (fs_kept, s3_again) = run(true, "workflow ids resumed: 1 task(s) kept, 1 to run");
    assert_eq!(fs_kept, fs_again);
    assert_ne!(s3_again, s3_task);
    assert_eq!(c.output(s3_again), "xyz\n");
}

#[test]
fn an_invalid_workflow_file_names_the_line_and_key_and_creates_nothing() {
    let server = Server::start_on(Backend::Sqlite, ServerOpts::default());
    let c = server.client();
    let bad = FAILING.replace("depends: [count]", "depends: [cuont]");
    let file = c.scratch_file("bad.yaml", &bad);
    let out = c.ctl(["workflow", "run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "line 19: steps[2].depends[0]: unknown step \"cuont\" (steps: gen, count, total)"
        ),
        "{stderr}"
    );
    let typo = FAILING.replace(
        "    foreach: letters\n    depends",
        "    forech: letters\n    depends",
    );
    let file = c.scratch_file("typo.yaml", &typo);
    let out = c.ctl(["workflow", "run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 13: steps[1]: unknown field `forech`"),
        "{stderr}"
    );
    let recruit = FAILING.replace("name: wf\n", "name: wf\nrecruit: {flavor: b2-7}\n");
    let file = c.scratch_file("recruit.yaml", &recruit);
    let out = c.ctl(["workflow", "run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: recruit: for step gen: provider is needed"),
        "{stderr}"
    );
    // Checked by scitqd before any task: this one recruits nothing.
    let recruit = FAILING.replace(
        "name: wf\n",
        "name: wf\nrecruit: {provider: ovh, max_workers: 1}\n",
    );
    let file = c.scratch_file("recruit.yaml", &recruit);
    let out = c.ctl(["workflow", "run", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot add the recruiter of batch wf.gen")
            && stderr.contains("no [[provider]] configured"),
        "{stderr}"
    );
    assert!(c.batches().is_empty(), "nothing is created");
}

/// scitqd with a local provider (its agents are processes on this machine) whose flavors
/// are `small` and `big`, as the recruiting example of docs/workflow.md says.
const RECRUITING: &str = r#"
[recruit]
interval = "300ms"

[[provider]]
name = "local"
kind = "local"
max_instances = 4
deploy_timeout = "60s"
agent_args = ["--reconnect-max", "1s", "--heartbeat", "1s"]

[[provider.flavor]]
name = "small"
cpu = 1
memory_gib = 1

[[provider.flavor]]
name = "big"
cpu = 2
memory_gib = 4
"#;

/// Kills the local instances' agents a failed test leaves (by their recorded pids).
struct Instances(std::path::PathBuf);

impl Drop for Instances {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let record: Option<Value> = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok());
            if let Some(pid) = record.as_ref().and_then(|r| r["pid"].as_i64()) {
                // Its own process group: the agent and what it runs.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

#[test]
fn a_workflow_with_recruit_runs_on_recruited_agents_that_go_after() {
    const LONG: Duration = Duration::from_secs(180);
    let config_dir = tempfile::tempdir().expect("a temp dir");
    let config = config_dir.path().join("scitqd.toml");
    std::fs::write(&config, RECRUITING).expect("write the config");
    let server = Server::start(
        ServerOpts::default()
            .arg("--config")
            .arg(config.to_str().expect("utf-8 path")),
    );
    let _instances = Instances(server.data_dir().join("local-instances/local"));
    let c = server.client();
    // As documented, but idle for longer: the workers are looked at after the last task.
    let example = documented_block(1);
    assert!(example.contains("idle_timeout: 5s"), "{example}");
    let file = c.scratch_file(
        "greetings.yaml",
        &example.replace("idle_timeout: 5s", "idle_timeout: 20s"),
    );
    let file = file.to_str().expect("utf-8 path");

    let dry = c.ctl(["workflow", "run", file, "--dry-run"]);
    assert!(dry.status.success(), "{}", describe(&dry));
    let said = String::from_utf8_lossy(&dry.stderr);
    for line in [
        "dry run: step hello recruits on local, flavor small, at most 2 machine(s), \
         concurrency 2, rounds 1, prefetch auto, idle timeout 20s",
        "dry run: step bye recruits on local, the cheapest flavor with cpu >= 2, at most 1 \
         machine(s), concurrency 2",
    ] {
        assert!(said.contains(line), "{line:?} in {said}");
    }
    assert_eq!(c.ctl_json(["recruiter", "list"]), serde_json::json!([]));

    let ids = c.ctl_json(["workflow", "run", file]);
    assert_eq!(ids.as_array().map(Vec::len), Some(5), "{ids}");
    let rules = c.ctl_json(["recruiter", "list"]);
    let rules: Vec<(String, String, u64, u64)> = rules
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                str_field(r, "batch"),
                str_field(r, "flavor"),
                r["min_cpu"].as_u64().unwrap_or(0),
                r["max_workers"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("greetings.hello".to_owned(), "small".to_owned(), 0, 2),
            ("greetings.bye".to_owned(), String::new(), 2, 1)
        ],
        "in plan order"
    );

    let bye = task_named(&c, "greetings.bye", "bye");
    c.wait_task(bye, "succeeded", LONG);
    assert_eq!(c.output(bye), "bye everyone\n");
    // Every task ran on a recruited agent (scitqd has no other), bye on a 2-cpu one.
    let workers = c.workers();
    let flavor_of = |task: i64| -> String {
        let id = as_id(&c.task(task)["worker_id"]);
        let worker = workers
            .iter()
            .find(|w| as_id(&w["id"]) == id)
            .unwrap_or_else(|| panic!("worker {id} in {workers:?}"));
        assert_eq!(worker["provider"], "local", "{worker}");
        str_field(worker, "flavor")
    };
    assert_eq!(flavor_of(bye), "big");
    for hello in c.tasks(&["--batch", "greetings.hello"]) {
        assert_eq!(flavor_of(as_id(&hello["id"])), "small", "{hello}");
    }

    // Idle, nothing waiting: every machine destroyed, its worker forgotten.
    scitq_tests::poll(LONG, "every recruited machine destroyed", || {
        let jobs = c.ctl_json(["job", "list", "--limit", "1000"]);
        let jobs = jobs.as_array().cloned().unwrap_or_default();
        let count = |kind: &str| {
            jobs.iter()
                .filter(|j| j["kind"] == kind && j["status"] == "succeeded")
                .count()
        };
        let recruited = c
            .workers()
            .iter()
            .filter(|w| w["provider"] == "local")
            .count();
        if recruited == 0 && count("create") >= 2 && count("create") == count("destroy") {
            Ok(())
        } else {
            Err(format!("{recruited} recruited workers, jobs {jobs:?}"))
        }
    });
    let out = c.ctl(["workflow", "delete", "greetings"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5 tasks, 2 recruiter(s)"),
        "{}",
        describe(&out)
    );
    assert_eq!(c.ctl_json(["recruiter", "list"]), serde_json::json!([]));
}

scitq_tests::on_both_backends!(
    tasks_are_deleted_moved_between_batches_and_executions_listed_across_tasks,
    the_documented_workflow_runs_and_workflows_are_listed_stopped_and_deleted,
    a_failed_task_relaunched_with_a_new_command_lets_its_dependants_complete,
    resume_keeps_what_succeeded_and_runs_the_failed_part_again,
    resume_compares_what_the_inputs_hold_not_their_times,
);
