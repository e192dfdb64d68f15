//! coercion's spans and events exported to OpenTelemetry: each plan, block, sequence and
//! action is a `tracing` span, and `tracing-opentelemetry` turns them into OpenTelemetry spans.
//! Here they are written to stdout; put an OTLP exporter (`opentelemetry-otlp`) in place of
//! `opentelemetry_stdout::SpanExporter` to send them to a collector.
//!
//! ```text
//! cargo run --example otel --features otel
//! ```

use std::time::Duration;

use coercion::plugins::{Command, CommandReq, Sleep, SleepReq};
use coercion::prelude::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("coercion")))
        .init();

    let plan = Plan::builder("traced deploy")
        .block(
            Block::builder("hosts")
                .concurrency(2)
                .sequences(["web-1", "web-2"].map(|host| {
                    Sequence::builder(host)
                        .action(ActionSpec::new::<Command>(
                            "say hello",
                            CommandReq::new("echo").arg(format!("hello from {host}")),
                        ))
                        .action(ActionSpec::new::<Sleep>(
                            "settle",
                            SleepReq::new(Duration::from_millis(50)),
                        ))
                })),
        )
        .build();
    let ws = Workstream::in_memory(Registry::from_inventory()?).await?;
    let done = ws.run(plan).await?;
    eprintln!("plan {} {}", done.id(), done.status());
    // Exports what is left before the process ends.
    provider.shutdown()?;
    Ok(())
}
