//! Database entities: the third, private representation of the domain (wire types stay in
//! `grpc/`, domain types in `core/`). Statuses are stored as lower-case text so the
//! database reads well by hand.

pub mod task {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub batch: String,
        #[sea_orm(column_type = "Text")]
        pub command: String,
        pub shell: i32,
        pub container: String,
        /// JSON array of strings.
        #[sea_orm(column_type = "Text")]
        pub container_options: String,
        /// JSON array of strings.
        #[sea_orm(column_type = "Text")]
        pub inputs: String,
        pub output: String,
        /// JSON array of strings.
        #[sea_orm(column_type = "Text")]
        pub resources: String,
        pub retry: i32,
        pub retry_left: i32,
        pub priority: i32,
        pub status: String,
        #[sea_orm(column_type = "Text")]
        pub status_reason: String,
        pub execution_id: Option<i64>,
        pub worker_id: Option<i64>,
        pub exit_code: Option<i32>,
        pub created_at: i64,
        pub updated_at: i64,
        /// Seconds the command may run; 0: no limit.
        pub run_timeout_s: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod execution {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "execution")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub task_id: i64,
        pub worker_id: i64,
        pub state: String,
        #[sea_orm(column_type = "Text")]
        pub command: String,
        pub shell: i32,
        pub container: String,
        #[sea_orm(column_type = "Text")]
        pub container_options: String,
        #[sea_orm(column_type = "Text")]
        pub inputs: String,
        pub output: String,
        #[sea_orm(column_type = "Text")]
        pub resources: String,
        pub exit_code: Option<i32>,
        pub failure: String,
        #[sea_orm(column_type = "Text")]
        pub message: String,
        pub assigned_at: i64,
        pub started_at: Option<i64>,
        pub finished_at: Option<i64>,
        pub stdout_bytes: i64,
        pub stderr_bytes: i64,
        /// The task's limit when the attempt was assigned.
        pub run_timeout_s: i32,
        /// Files uploaded from the output folder: a JSON array of `{"uri", "size"}`.
        #[sea_orm(column_type = "Text")]
        pub uploaded: String,
        /// What the inputs held when the agent staged them: a JSON array of `{"uri",
        /// "files": [{"path", "size", "etag", "modified"}]}`.
        #[sea_orm(column_type = "Text")]
        pub inputs_seen: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod log_chunk {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "log_chunk")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub execution_id: i64,
        pub task_id: i64,
        /// 0 stdout, 1 stderr.
        pub stream: i32,
        pub offset: i64,
        pub data: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod worker {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "worker")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        pub host: String,
        pub concurrency: i32,
        pub prefetch: i32,
        pub batch: String,
        pub status: String,
        pub last_contact: i64,
        pub created_at: i64,
        /// Paused by an operator: no new task.
        pub paused: bool,
        /// Draining: no new task; its agent exits once it holds nothing.
        pub draining: bool,
        /// Hex SHA-256 of the worker's own credential; None until its first Hello.
        pub credential_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod batch {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "batch")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub stopped: bool,
        pub created_at: i64,
        /// Stopped, and its running tasks frozen.
        pub suspended: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_token")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// "admin" or "worker".
        pub role: String,
        /// Hex SHA-256 of the token.
        #[sea_orm(unique)]
        pub hash: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task_dependency {
    use sea_orm::entity::prelude::*;

    /// `task_id` runs only once `depends_on` succeeded.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_dependency")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub depends_on: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
