//! m0012: enrollment tokens (`core::enroll`), stored hashed, bound to an instance name,
//! short-lived and single use.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Enrollment;

impl MigrationName for Enrollment {
    fn name(&self) -> &str {
        "m0012_enrollment"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Enrollment {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("enrollment"))
                    .col(string("hash").primary_key())
                    .col(string("instance"))
                    .col(big_integer("created_at"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("used_at"))
                    .col(big_integer_null("worker_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("enrollment_instance")
                    .table(Alias::new("enrollment"))
                    .col(Alias::new("instance"))
                    .to_owned(),
            )
            .await
    }
}
