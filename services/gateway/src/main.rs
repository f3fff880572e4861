//! `retail-gateway`: runs the partner gateway.

/// mimalloc: the gateway allocates many small, short-lived buffers per request on
/// every worker thread, which it serves faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    retail_kit::service::main::<retail_gateway::Application>().await
}
