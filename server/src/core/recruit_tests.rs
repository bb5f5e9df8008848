//! Tests of the recruitment decisions (`core::recruit`): the cases one by one, then a
//! property test that random rules, machines and waiting work never lead to a plan past a
//! quota or a rule's maximum, nor to a destroyed busy machine.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;

use super::ids::{MachineId, RecruiterId};
use super::recruit::*;

const NOW: i64 = 1_000_000;

fn flavor(name: &str, cpu: u32, memory_gib: u64, price: Option<f64>) -> Flavor {
    Flavor {
        name: name.to_owned(),
        cpu,
        memory_mib: memory_gib * 1024,
        disk_gib: 50,
        gpu: 0,
        price_per_hour: price,
    }
}

fn provider(quota: Quota) -> ProviderInfo {
    ProviderInfo {
        regions: vec!["r1".to_owned(), "r2".to_owned()],
        flavors: Some(vec![
            flavor("small", 2, 4, Some(0.02)),
            flavor("big", 8, 32, Some(0.10)),
            flavor("odd", 4, 8, None),
        ]),
        quota,
        learned: BTreeMap::new(),
        deploy_timeout: Duration::from_secs(60),
    }
}

fn rule(id: i64, batch: &str) -> Rule {
    Rule {
        id: RecruiterId(id),
        batch: batch.to_owned(),
        provider: "cloud".to_owned(),
        region: None,
        flavor: FlavorChoice::Named("small".to_owned()),
        max_workers: 3,
        rounds: 1,
        concurrency: 2,
        prefetch: None,
        idle_timeout: Duration::from_secs(5),
        paused: false,
        retry_at: None,
        paused_reason: None,
        failures: 0,
    }
}

fn machine(id: i64, rule: Option<i64>, batch: &str, state: MachineState) -> Machine {
    Machine {
        id: MachineId(id),
        provider: "cloud".to_owned(),
        region: "r1".to_owned(),
        flavor: "small".to_owned(),
        cpu: 2,
        memory_mib: 4096,
        rule: rule.map(RecruiterId),
        batch: Some(batch.to_owned()),
        idle_timeout: Some(Duration::from_secs(5)),
        state,
        created_at: NOW - 1_000,
        busy: false,
    }
}

fn running(active: u32, idle_since: Option<i64>) -> MachineState {
    MachineState::Running {
        active,
        idle_since,
        offline_since: None,
    }
}

fn input(rules: Vec<Rule>, machines: Vec<Machine>, waiting: &[(&str, u64)]) -> Input {
    Input {
        now: NOW,
        rules,
        machines,
        providers: BTreeMap::from([("cloud".to_owned(), provider(Quota::default()))]),
        waiting: waiting.iter().map(|(b, n)| ((*b).to_owned(), *n)).collect(),
    }
}

fn creates(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Create { .. }))
        .count()
}

#[test]
fn waiting_work_recruits_up_to_the_rules_maximum() {
    // 40 tasks at 2 per worker and 1 round want 20 workers: the maximum is 3.
    let actions = plan(&input(vec![rule(1, "b")], vec![], &[("b", 40)]));
    assert_eq!(creates(&actions), 3, "{actions:?}");
    let Action::Create { region, flavor, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!((region.as_str(), flavor.name.as_str()), ("r1", "small"));
    // 3 tasks want 2 workers; one already deploying leaves one to create.
    let actions = plan(&input(
        vec![rule(1, "b")],
        vec![machine(1, Some(1), "b", MachineState::Deploying)],
        &[("b", 3)],
    ));
    assert_eq!(creates(&actions), 1, "{actions:?}");
    // Rounds: 8 tasks at 2 per slot and 2 rounds want 2 workers.
    let mut r = rule(1, "b");
    r.rounds = 2;
    assert_eq!(r.wanted(8), 2);
    assert_eq!(r.wanted(9), 3);
    assert_eq!(r.wanted(0), 0);
    // Nothing waiting, nothing created; a paused rule creates nothing.
    assert!(plan(&input(vec![rule(1, "b")], vec![], &[])).is_empty());
    let mut paused = rule(1, "b");
    paused.paused = true;
    assert!(plan(&input(vec![paused], vec![], &[("b", 40)])).is_empty());
}

#[test]
fn the_cheapest_matching_flavor_is_chosen() {
    let flavors = provider(Quota::default()).flavors.unwrap();
    let pick = |choice: FlavorChoice| {
        matching(&choice, &flavors)
            .first()
            .map(|f| f.name.clone())
            .unwrap_or_default()
    };
    let min = |cpu, memory_gib| FlavorChoice::Minimums {
        cpu,
        memory_gib,
        disk_gib: 0,
        gpu: 0,
    };
    assert_eq!(pick(min(1, 1)), "small");
    assert_eq!(pick(min(3, 1)), "big", "priced before unpriced");
    assert_eq!(pick(min(9, 1)), "");
    assert_eq!(pick(FlavorChoice::Named("odd".into())), "odd");
    let mut r = rule(1, "b");
    r.flavor = min(64, 1);
    let actions = plan(&input(vec![r], vec![], &[("b", 1)]));
    assert!(
        matches!(&actions[..], [Action::Pause { reason, .. }] if reason.contains("no flavor")),
        "{actions:?}"
    );
}

#[test]
fn quotas_configured_and_learned_are_never_exceeded() {
    let mut i = input(vec![rule(1, "b")], vec![], &[("b", 40)]);
    // Two instances at most; one is already there (another rule's).
    i.providers.get_mut("cloud").unwrap().quota = Quota {
        instances: Some(2),
        ..Quota::default()
    };
    i.machines
        .push(machine(7, Some(9), "other", running(1, None)));
    assert_eq!(creates(&plan(&i)), 1);
    // Cores: 5 cores hold two small (2-core) machines.
    let mut i = input(vec![rule(1, "b")], vec![], &[("b", 40)]);
    i.providers.get_mut("cloud").unwrap().quota = Quota {
        cores: Some(5),
        ..Quota::default()
    };
    assert_eq!(creates(&plan(&i)), 2);
    // Learned from a quota error in r1: one instance. r2 is not limited by it.
    let mut i = input(
        vec![rule(1, "b")],
        vec![machine(7, Some(9), "other", running(1, None))],
        &[("b", 40)],
    );
    let p = i.providers.get_mut("cloud").unwrap();
    p.learned.insert(
        "r1".into(),
        learned_quota(Usage {
            instances: 1,
            cores: 2,
            memory_mib: 4096,
        }),
    );
    assert_eq!(creates(&plan(&i)), 0);
    i.rules[0].region = Some("r2".into());
    assert_eq!(creates(&plan(&i)), 3);
}

#[test]
fn idle_machines_are_reused_before_anything_is_created() {
    // Machine 5 served batch "a" (nothing waits there) and is idle: batch "b" takes it.
    let machines = vec![
        machine(5, Some(2), "a", running(0, Some(NOW - 100))),
        machine(6, Some(2), "a", running(1, None)),
    ];
    let actions = plan(&input(
        vec![rule(1, "b"), rule(2, "a")],
        machines.clone(),
        &[("b", 2)],
    ));
    assert_eq!(
        actions,
        vec![Action::Reuse {
            machine: MachineId(5),
            rule: RecruiterId(1)
        }]
    );
    // Not when its own batch still has work, nor when it is busy or of another flavor.
    let actions = plan(&input(
        vec![rule(1, "b"), rule(2, "a")],
        machines.clone(),
        &[("b", 2), ("a", 1)],
    ));
    assert_eq!(creates(&actions), 1, "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Reuse { .. })));
    let mut big = machines[0].clone();
    big.flavor = "big".into();
    let actions = plan(&input(vec![rule(1, "b")], vec![big], &[("b", 2)]));
    assert_eq!(creates(&actions), 1, "{actions:?}");
}

#[test]
fn machines_that_never_connect_or_are_lost_are_destroyed() {
    let mut old = machine(1, Some(1), "b", MachineState::Deploying);
    old.created_at = NOW - 60_000;
    let young = machine(2, Some(1), "b", MachineState::Creating);
    let mut lost = machine(
        3,
        Some(1),
        "b",
        MachineState::Running {
            active: 0,
            idle_since: None,
            offline_since: Some(NOW - 61_000),
        },
    );
    lost.created_at = NOW - 3_600_000;
    let mut busy = old.clone();
    busy.id = MachineId(4);
    busy.busy = true;
    let actions = plan(&input(
        vec![rule(1, "b")],
        vec![old, young, lost, busy],
        &[("b", 100)],
    ));
    assert!(actions.contains(&Action::Destroy {
        machine: MachineId(1),
        reason: DestroyReason::NeverConnected
    }));
    assert!(actions.contains(&Action::Destroy {
        machine: MachineId(3),
        reason: DestroyReason::Lost
    }));
    // The two destroyed are replaced at once: max 3, the young one and the busy one count.
    assert_eq!(creates(&actions), 1, "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(
        a,
        Action::Destroy { machine, .. } if *machine == MachineId(2) || *machine == MachineId(4)
    )));
}

#[test]
fn idle_machines_go_after_their_timeout_when_nothing_waits() {
    let idle = |since: i64| machine(1, Some(1), "b", running(0, Some(since)));
    // Idle 6 s with a 5 s timeout, nothing waiting: destroyed.
    let actions = plan(&input(vec![rule(1, "b")], vec![idle(NOW - 6_000)], &[]));
    assert_eq!(
        actions,
        vec![Action::Destroy {
            machine: MachineId(1),
            reason: DestroyReason::Idle
        }]
    );
    // Not yet past it; or work waits in its batch; or it runs something.
    assert!(plan(&input(vec![rule(1, "b")], vec![idle(NOW - 4_000)], &[])).is_empty());
    assert!(
        !plan(&input(
            vec![rule(1, "b")],
            vec![idle(NOW - 6_000)],
            &[("b", 1)]
        ))
        .iter()
        .any(|a| matches!(a, Action::Destroy { .. }))
    );
    let working = machine(1, Some(1), "b", running(2, None));
    assert!(plan(&input(vec![rule(1, "b")], vec![working], &[])).is_empty());
    // Recruited by hand: never destroyed by the recruiter.
    let mut by_hand = idle(NOW - 600_000);
    by_hand.rule = None;
    by_hand.idle_timeout = None;
    assert!(plan(&input(vec![], vec![by_hand], &[])).is_empty());
}

#[test]
fn failures_back_off_then_pause_the_rule() {
    assert_eq!(after_failure(0, 1), Ok(5_000));
    assert_eq!(after_failure(0, 2), Ok(10_000));
    let paused = after_failure(0, MAX_FAILURES).unwrap_err();
    assert!(paused.contains("3 deployments in a row failed"), "{paused}");
    // A rule waiting out its backoff creates nothing, but still re-uses.
    let mut r = rule(1, "b");
    r.retry_at = Some(NOW + 1);
    assert_eq!(
        creates(&plan(&input(vec![r.clone()], vec![], &[("b", 9)]))),
        0
    );
    r.retry_at = Some(NOW);
    assert_eq!(creates(&plan(&input(vec![r], vec![], &[("b", 9)]))), 3);
}

#[test]
fn a_rule_naming_an_unknown_provider_or_region_pauses() {
    let mut r = rule(1, "b");
    r.provider = "nowhere".into();
    let actions = plan(&input(vec![r], vec![], &[("b", 1)]));
    assert!(
        matches!(&actions[..], [Action::Pause { reason, .. }] if reason.contains("nowhere")),
        "{actions:?}"
    );
    let mut r = rule(1, "b");
    r.region = Some("r9".into());
    let actions = plan(&input(vec![r], vec![], &[("b", 1)]));
    assert!(
        matches!(&actions[..], [Action::Pause { reason, .. }] if reason.contains("r9")),
        "{actions:?}"
    );
    // A provider that cannot be reached (flavors unknown) creates nothing and pauses nothing.
    let mut i = input(vec![rule(1, "b")], vec![], &[("b", 1)]);
    i.providers.get_mut("cloud").unwrap().flavors = None;
    assert!(plan(&i).is_empty());
}

// --- The property: random situations never give a plan past a limit.

fn arb_state() -> impl Strategy<Value = MachineState> {
    prop_oneof![
        Just(MachineState::Creating),
        Just(MachineState::Deploying),
        Just(MachineState::Destroying),
        (
            0u32..3,
            proptest::option::of(0i64..20_000),
            proptest::option::of(0i64..120_000)
        )
            .prop_map(|(active, idle, offline)| MachineState::Running {
                active,
                idle_since: if active == 0 {
                    idle.map(|d| NOW - d)
                } else {
                    None
                },
                offline_since: offline.map(|d| NOW - d),
            }),
    ]
}

fn arb_machine() -> impl Strategy<Value = (Option<i64>, usize, usize, MachineState, bool, i64)> {
    (
        proptest::option::of(1i64..4),
        0usize..2,
        0usize..3,
        arb_state(),
        any::<bool>(),
        0i64..120_000,
    )
}

fn arb_input() -> impl Strategy<Value = Input> {
    (
        proptest::collection::vec(
            (
                0usize..3,
                1u32..5,
                1u32..4,
                1u32..3,
                proptest::option::of(0usize..2),
                any::<bool>(),
            ),
            0..4,
        ),
        proptest::collection::vec(arb_machine(), 0..8),
        proptest::collection::vec(prop_oneof![Just(0u64), 1u64..30], 3),
        (
            proptest::option::of(0u32..6),
            proptest::option::of(0u32..20),
            proptest::option::of(0u32..3),
        ),
    )
        .prop_map(|(rules, machines, waiting, (instances, cores, learned))| {
            let batches = ["a", "b", "c"];
            let regions = ["r1", "r2"];
            let flavors = ["small", "big", "odd"];
            let rules: Vec<Rule> = rules
                .into_iter()
                .enumerate()
                .map(|(i, (batch, max, conc, rounds, region, paused))| {
                    let mut r = rule(i as i64 + 1, batches[batch]);
                    r.max_workers = max;
                    r.concurrency = conc;
                    r.rounds = rounds;
                    r.region = region.map(|x| regions[x].to_owned());
                    r.paused = paused;
                    if i == 2 {
                        r.flavor = FlavorChoice::Minimums {
                            cpu: 3,
                            memory_gib: 1,
                            disk_gib: 0,
                            gpu: 0,
                        };
                    }
                    r
                })
                .collect();
            let machines = machines
                .into_iter()
                .enumerate()
                .map(|(i, (rule, region, fl, state, busy, age))| {
                    let all = provider(Quota::default()).flavors.unwrap();
                    let f = &all[fl];
                    let mut m = machine(i as i64 + 1, rule, batches[i % 3], state);
                    m.region = regions[region].to_owned();
                    m.flavor = flavors[fl].to_owned();
                    m.cpu = f.cpu;
                    m.memory_mib = f.memory_mib;
                    m.busy = busy;
                    m.created_at = NOW - age;
                    m
                })
                .collect();
            let mut p = provider(Quota {
                instances,
                cores,
                memory_mib: None,
            });
            if let Some(n) = learned {
                p.learned.insert(
                    "r2".into(),
                    Quota {
                        instances: Some(n),
                        ..Quota::default()
                    },
                );
            }
            Input {
                now: NOW,
                rules,
                machines,
                providers: BTreeMap::from([("cloud".to_owned(), p)]),
                waiting: batches
                    .iter()
                    .zip(waiting)
                    .map(|(b, n)| ((*b).to_owned(), n))
                    .collect(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn no_plan_exceeds_a_quota_or_a_rule_or_touches_a_busy_machine(input in arb_input()) {
        let actions = plan(&input);
        let before = usage(&input.machines);
        let mut after = before.clone();
        let mut touched = BTreeSet::new();
        let mut per_rule: BTreeMap<RecruiterId, u32> = BTreeMap::new();
        let by_id: BTreeMap<MachineId, &Machine> =
            input.machines.iter().map(|m| (m.id, m)).collect();
        for action in &actions {
            match action {
                Action::Create { rule, provider, region, flavor } => {
                    let used = after.entry((provider.clone(), region.clone())).or_default();
                    used.instances += 1;
                    used.cores += flavor.cpu;
                    used.memory_mib += flavor.memory_mib;
                    *per_rule.entry(*rule).or_default() += 1;
                    let r = input.rules.iter().find(|r| r.id == *rule).unwrap();
                    prop_assert!(!r.paused, "a paused rule created");
                }
                Action::Reuse { machine, rule } => {
                    let m = by_id[machine];
                    prop_assert!(!m.busy && touched.insert(*machine), "{action:?}");
                    prop_assert!(
                        matches!(m.state, MachineState::Running { active: 0, offline_since: None, .. }),
                        "re-used a machine that is not idle: {m:?}"
                    );
                    *per_rule.entry(*rule).or_default() += 1;
                }
                Action::Destroy { machine, reason } => {
                    let m = by_id[machine];
                    prop_assert!(!m.busy && touched.insert(*machine), "{action:?}");
                    if *reason == DestroyReason::Idle {
                        prop_assert!(
                            matches!(m.state, MachineState::Running { active: 0, .. }),
                            "destroyed a machine that runs tasks: {m:?}"
                        );
                        prop_assert!(m.idle_timeout.is_some(), "destroyed a hand-recruited machine");
                    }
                }
                Action::Pause { .. } => {}
            }
        }
        // Creates fit the quota of their region, whatever was there before.
        let p = &input.providers["cloud"];
        for ((_, region), used) in &after {
            let was = before.get(&("cloud".to_owned(), region.clone())).copied().unwrap_or_default();
            if *used != was {
                prop_assert!(p.quota(region).holds(used), "{region}: {used:?} past {:?}", p.quota(region));
            }
        }
        // A rule never has more machines than its maximum, counting what it had.
        for rule in &input.rules {
            let had = input.machines.iter().filter(|m| {
                m.rule == Some(rule.id)
                    && !matches!(m.state, MachineState::Destroying)
                    && !actions.iter().any(|a| matches!(a, Action::Destroy { machine, .. } if *machine == m.id))
            }).count() as u32;
            let added = per_rule.get(&rule.id).copied().unwrap_or(0);
            prop_assert!(added == 0 || had + added <= rule.max_workers,
                "rule {} had {had}, added {added}, max {}", rule.id, rule.max_workers);
        }
    }
}
