//! m0016: recruitment. Recruiter rules, the machines scitqd recruited (kept after they are
//! destroyed), their provisioning jobs, and the server's settings (its owner id, which tags
//! every machine it creates).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Recruitment;

impl MigrationName for Recruitment {
    fn name(&self) -> &str {
        "m0016_recruitment"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Recruitment {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("server_setting"))
                    .col(string("key").primary_key())
                    .col(string("value"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("recruiter"))
                    .col(big_integer("id").primary_key())
                    .col(string("batch"))
                    .col(string("provider"))
                    .col(string_null("region"))
                    .col(string_null("flavor"))
                    .col(integer("min_cpu"))
                    .col(integer("min_mem_gib"))
                    .col(integer("min_disk_gib"))
                    .col(integer("gpu"))
                    .col(integer("max_workers"))
                    .col(integer("rounds"))
                    .col(integer("concurrency"))
                    .col(integer_null("prefetch"))
                    .col(big_integer("idle_timeout_ms"))
                    .col(boolean("paused"))
                    .col(text_null("paused_reason"))
                    .col(integer("failures"))
                    .col(big_integer_null("retry_at"))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("machine"))
                    .col(big_integer("id").primary_key())
                    .col(string_uniq("name"))
                    .col(string("provider"))
                    .col(string("region"))
                    .col(string("flavor"))
                    .col(integer("cpu"))
                    .col(big_integer("memory_mib"))
                    .col(string_null("provider_id"))
                    .col(big_integer_null("recruiter_id"))
                    .col(string_null("batch"))
                    .col(integer("concurrency"))
                    .col(integer_null("prefetch"))
                    .col(big_integer_null("idle_timeout_ms"))
                    .col(string("state"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("connected_at"))
                    .col(big_integer_null("ended_at"))
                    .col(text_null("reason"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("machine_state")
                    .table(Alias::new("machine"))
                    .col(Alias::new("state"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("job"))
                    .col(big_integer("id").primary_key())
                    .col(big_integer("machine_id"))
                    .col(string("kind"))
                    .col(string("status"))
                    .col(integer("attempts"))
                    .col(string_null("error_class"))
                    .col(text("log"))
                    .col(big_integer("created_at"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("job_status")
                    .table(Alias::new("job"))
                    .col(Alias::new("status"))
                    .to_owned(),
            )
            .await
    }
}
