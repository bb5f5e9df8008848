//! Identifier newtypes, so a task id can never be passed where a worker id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A task; kept across all its attempts.
    TaskId
);
id_type!(
    /// One attempt of a task on one worker.
    ExecutionId
);
id_type!(
    /// A worker, recognised across reconnections by its name.
    WorkerId
);
id_type!(
    /// A recruiter rule.
    RecruiterId
);
id_type!(
    /// A machine scitqd recruited (its record, kept after the instance is destroyed).
    MachineId
);
