//! Waiting for a batch to finish, over one gRPC connection: polling with `scitqctl` started a
//! process ten times a second on the machine being measured, which cost the throughput part
//! a few percent that the bare loop it is compared with does not pay.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use scitq_proto::v1::ListBatchesRequest;
use scitq_proto::v1::task_service_client::TaskServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use scitq_tests::Server;

/// How often the batch's counts are read.
const POLL: Duration = Duration::from_millis(100);

/// Returns once `n` tasks of `batch` succeeded; fails as soon as one failed, or after an hour.
pub fn wait_all_succeeded(server: &Server, batch: &str, n: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wait(server, batch, n as u64))
}

async fn wait(server: &Server, batch: &str, n: u64) -> Result<()> {
    let channel = Endpoint::from_shared(format!("http://{}", server.addr()))?
        .connect()
        .await
        .context("connect to scitqd")?;
    let mut client = TaskServiceClient::new(channel);
    let bearer: MetadataValue<_> = format!("Bearer {}", server.admin_token()).parse()?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let mut request = tonic::Request::new(ListBatchesRequest {});
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        let batches = client.list_batches(request).await?.into_inner().batches;
        let counts = batches
            .into_iter()
            .find(|b| b.name == batch)
            .with_context(|| format!("batch {batch} not listed"))?
            .counts;
        let count = |s: &str| counts.get(s).copied().unwrap_or(0);
        ensure!(count("failed") == 0, "tasks failed: {counts:?}");
        if count("succeeded") >= n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not done after an hour: {counts:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
