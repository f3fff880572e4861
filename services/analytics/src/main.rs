//! `retail-analytics`: runs the analytics service, or applies its migrations.

/// mimalloc: the services allocate many small, short-lived buffers per request on
/// every worker thread, which it serves faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    retail_kit::service::main::<retail_analytics::Application>().await
}
