"""scitq.workflow: a fan-out then fan-in workflow where a task fails, is relaunched with a
new command, and its dependants then complete; cleaning; recruitment arguments checked and
the workflow's cap shared out (test_recruit.py recruits for real)."""

import pytest

from scitq.errors import Unsupported, WorkflowError
from scitq.workflow import Workflow, share_out

SAMPLES = ["a", "b", "c"]


def test_fan_out_fan_in_with_a_failure_relaunched(server, batch, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"file://{tmp_path}/store"
    wf = Workflow(f"wf{batch.rsplit('-', 1)[1]}", server=server, shell=True)
    gens, counts = {}, {}
    for sample in SAMPLES:
        command = f'echo "{sample}{sample}{sample}" > "$OUTPUT/{sample}.txt"'
        if sample == "b":
            command = "echo broken >&2; exit 1"
        gens[sample] = wf.step(batch="gen", command=command, name=f"gen-{sample}",
                               output=f"{store}/gen/{sample}")
        counts[sample] = wf.step(
            batch="count", name=f"count-{sample}",
            command=f'wc -c < "$INPUT/{sample}.txt" | tr -d " " > "$OUTPUT/{sample}.count"',
            input=gens[sample].output + f"{sample}.txt", output=f"{store}/count/{sample}/",
            required_tasks=gens[sample])
    last = counts["c"]
    assert [s.task_id for s in last.gather()] == [counts[x].task_id for x in SAMPLES]
    assert last.gather("output/x") == [f"{store}/count/{x}/x" for x in SAMPLES]
    total = wf.step(batch="total", name="total", command='cat "$INPUT"/*.count | awk \'{s += $1} END {print s}\'',
                    input=[o + f"{x}.count" for o, x in zip(last.gather("output"), SAMPLES)],
                    required_tasks=last.gather())
    assert total.batch == f"{wf.name}.total"

    first = wf.run(progress=False)
    assert first["gen"]["failed"] == 1 and first["gen"]["succeeded"] == 2
    assert first["count"]["canceled"] == 1 and first["count"]["succeeded"] == 2
    assert first["total"]["canceled"] == 1
    assert gens["b"].get_error() == "broken\n"

    server.task_relaunch(gens["b"], command='echo "bbb" > "$OUTPUT/b.txt"')
    second = wf.run(progress=False)
    assert {step: c["succeeded"] for step, c in second.items()} == {"gen": 3, "count": 3, "total": 1}
    assert total.get_output() == "12\n"
    assert total.refresh().status == "succeeded"

    deleted = wf.clean()
    assert deleted == {"gen": 3, "count": 3, "total": 1}
    logs = tmp_path / wf.name
    assert (logs / "total_output.log").read_text() == "12\n"
    assert (logs / "gen-b_output.log").exists() is False, "its last run printed nothing"
    assert server.tasks(batch=f"{wf.name}.gen") == []


def test_clean_keeps_a_batch_that_did_not_succeed_unless_forced(server, batch, tmp_path, capsys):
    wf = Workflow(f"keep{batch.rsplit('-', 1)[1]}", server=server)
    wf.step(batch="ok", command="true")
    wf.step(batch="bad", command="false")
    wf.run(progress=False)
    assert wf.clean(log_destination=None) == {"ok": 1}
    assert f"kept batch {wf.name}.bad: 1 of 1 task(s) did not succeed" in capsys.readouterr().err
    assert wf.clean(force=True, log_destination=tmp_path / "logs") == {"bad": 1}


def test_recruitment_arguments_are_checked_before_anything_is_made(server):
    with pytest.raises(WorkflowError, match="needs max_workflow_workers"):
        Workflow("w", server=server, provider="ovh", region="GRA11")
    with pytest.raises(Unsupported, match="'eviction<=5' is not supported"):
        Workflow("w", server=server, provider="ovh", max_workflow_workers=3,
                 flavor="auto:eviction<=5")
    with pytest.raises(Unsupported, match="flavor='b2-7' without provider"):
        Workflow("w", server=server, flavor="b2-7").step(batch="s", command="true")
    wf = Workflow("w", server=server)
    with pytest.raises(Unsupported, match="concurrency=4 without provider"):
        wf.step(batch="s", command="true", concurrency=4)
    with pytest.raises(Unsupported, match="maximum_workers=2 without provider"):
        wf.step(batch="s", command="true", maximum_workers=2)
    with pytest.raises(WorkflowError, match="needs the workflow's max_workflow_workers"):
        wf.step(batch="s", command="true", provider="ovh")
    capped = Workflow("w", server=server, provider="ovh", max_workflow_workers=3)
    with pytest.raises(WorkflowError, match="recruiting needs concurrency"):
        capped.step(batch="s", command="true")
    with pytest.raises(Unsupported, match="tasks_per_worker=3 must be a multiple of "
                                          "concurrency \\(2\\)"):
        capped.step(batch="s", command="true", concurrency=2, tasks_per_worker=3)
    with pytest.raises(Unsupported, match="download_timeout"):
        wf.step(batch="s", command="true", download_timeout=5)
    with pytest.raises(WorkflowError, match="rel_output needs"):
        wf.step(batch="s", command="true", rel_output="x")
    assert wf.steps == [] and capped.steps == []


def test_the_cap_is_shared_out_in_turns():
    assert share_out(10, {"a": 5, "b": 5, "c": 5, "d": 1}) == {"a": 3, "b": 3, "c": 3, "d": 1}
    assert share_out(3, {"a": 4, "b": 3, "c": 1}) == {"a": 1, "b": 1, "c": 1}
    assert share_out(8, {"a": 2, "b": 3}) == {"a": 2, "b": 3}
    with pytest.raises(WorkflowError, match="cannot give each of the 2 recruiting steps"):
        share_out(1, {"a": 1, "b": 1})


def test_run_shows_a_live_table_per_step(server, batch, capsys):
    wf = Workflow(f"live{batch.rsplit('-', 1)[1]}", server=server)
    first = wf.step(batch="one", command="true")
    wf.step(batch="two", command="true", required_tasks=first)
    assert wf.run(progress=True)["two"]["succeeded"] == 1
    table = capsys.readouterr().err
    # Each redraw moves up over the previous table and clears it: the last frame is the
    # final state.
    frames = table.split("\x1b[3F\x1b[J")
    assert all(f.count("\n") == 3 for f in frames), table
    header, one, two = frames[-1].splitlines()
    assert header.split() == [wf.name, "waiting", "pending", "assigned", "accepted", "running",
                              "uploading", "paused", "failed", "canceled", "succeeded"]
    assert (one.split(), two.split()) == (["one", "1"], ["two", "1"]), table
    wf.clean(log_destination=None)


def _three_steps(wf, store, command_b):
    gens, counts = {}, {}
    for sample in SAMPLES:
        command = command_b if sample == "b" else f'echo "{sample}{sample}{sample}" > "$OUTPUT/{sample}.txt"'
        gens[sample] = wf.step(batch="gen", command=command, name=f"gen-{sample}",
                               output=f"{store}/gen/{sample}/")
        counts[sample] = wf.step(
            batch="count", name=f"count-{sample}",
            command=f'wc -c < "$INPUT/{sample}.txt" | tr -d " " > "$OUTPUT/{sample}.count"',
            input=gens[sample].output + f"{sample}.txt", output=f"{store}/count/{sample}/",
            required_tasks=gens[sample])
    last = counts["c"]
    total = wf.step(batch="total", name="total",
                    command='cat "$INPUT"/*.count | awk \'{s += $1} END {print s}\'',
                    input=[o + f"{x}.count" for o, x in zip(last.gather("output"), SAMPLES)],
                    required_tasks=last.gather())
    return gens, counts, total


def test_resume_keeps_what_succeeded_unchanged_and_runs_the_rest(server, batch, tmp_path):
    store = f"file://{tmp_path}/store"
    name = f"res{batch.rsplit('-', 1)[1]}"
    wf = Workflow(name, server=server, shell=True)
    gens, counts, total = _three_steps(wf, store, 'echo "bb" > "$OUTPUT/b.txt"')
    wf.run(progress=False)
    assert total.get_output() == "11\n"

    # Again with resume: b's command changed, so gen-b, count-b and total run again; the
    # others are the earlier tasks, kept, and say which execution they reuse.
    again = Workflow(name, server=server, shell=True, resume=True)
    gens2, counts2, total2 = _three_steps(again, store, 'echo "bbb" > "$OUTPUT/b.txt"')
    for sample in ("a", "c"):
        assert gens2[sample].task_id == gens[sample].task_id
        assert counts2[sample].task_id == counts[sample].task_id
    for step in (gens2["b"], counts2["b"], total2):
        assert step.task_id not in {gens["b"].task_id, counts["b"].task_id, total.task_id}
    kept = server.task_get(gens2["a"])
    execution = server.executions(task_id=gens["a"], output=False)[-1]["execution_id"]
    assert f"kept by resume: execution {execution} " in kept["status_reason"]
    assert any(f"execution {execution}" in r for r in server.task_explain(gens2["a"]))
    counts_by_step = again.run(progress=False)
    assert total2.get_output() == "12\n"
    assert all(c.get("failed", 0) == 0 for c in counts_by_step.values()), counts_by_step

    # An output that is gone, or an input changed since: run again.
    (tmp_path / "store" / "count" / "a" / "a.count").unlink()
    third = Workflow(name, server=server, shell=True, resume=True)
    gens3, counts3, total3 = _three_steps(third, store, 'echo "bbb" > "$OUTPUT/b.txt"')
    assert gens3["a"].task_id == gens["a"].task_id
    assert counts3["a"].task_id != counts["a"].task_id, "its output is gone"
    assert counts3["c"].task_id == counts["c"].task_id
    assert total3.task_id != total2.task_id, "a dependency runs again"
    third.run(progress=False)
    assert total3.get_output() == "12\n"
