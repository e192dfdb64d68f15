//! Notices of changed plans through PostgreSQL's `LISTEN`/`NOTIFY`: every writer's committed
//! group sends one notice on [`CHANNEL`] naming its schema and the plans it wrote (sent inside
//! the transaction, so delivered only if it commits); [`start`] listens on a connection of its
//! own and hands the notices of the store's schema to [`Store::changes`] receivers.
//!
//! [`Store::changes`]: crate::storage::Store::changes

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::storage::Changed;
use crate::workflow::PlanId;

/// The channel every coercion store of a database notifies on; the payload names the schema.
pub(super) const CHANNEL: &str = "coercion_changes";

/// PostgreSQL refuses payloads of 8,000 bytes or more; past this, a notice says "any plan".
const MAX_PAYLOAD: usize = 7_900;

/// How many notices a slow receiver may fall behind before it is told it lagged.
const BUFFER: usize = 1_024;

/// The payload of the notice of a group that wrote `ids` (in any order, repeats allowed) in
/// `schema`: `schema id,id,…`, or `schema *` when the ids do not fit.
pub(super) fn payload(schema: &str, ids: impl IntoIterator<Item = PlanId>) -> String {
    let mut ids: Vec<PlanId> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = format!("{schema} ");
    for (i, id) in ids.iter().enumerate() {
        if out.len() + 37 > MAX_PAYLOAD {
            return format!("{schema} *");
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out
}

/// The payload of the notice of a control request for plan `id` of `schema`, sent or
/// answered: `schema ?id`.
pub(super) fn control_payload(schema: &str, id: PlanId) -> String {
    format!("{schema} ?{id}")
}

/// What a notice says of `schema`'s plans; `None` for another schema's notice (or one that
/// does not parse, which no coercion writer sends).
fn parse(schema: &str, payload: &str) -> Option<Changed> {
    let (of, ids) = payload.split_once(' ')?;
    if of != schema {
        return None;
    }
    if ids == "*" {
        return Some(Changed::Any);
    }
    if let Some(id) = ids.strip_prefix('?') {
        return id.parse().ok().map(Changed::Control);
    }
    let ids: Result<Vec<PlanId>, _> = ids.split(',').map(|id| id.parse::<PlanId>()).collect();
    Some(ids.map_or(Changed::Any, |ids| Changed::Plans(ids.into())))
}

/// A channel for the notices [`start`] hands out.
pub(super) fn channel() -> broadcast::Sender<Changed> {
    broadcast::channel(BUFFER).0
}

/// Listens for the notices of `schema` on a connection of its own, on the current runtime,
/// until `cancel` fires or the runtime shuts down, and sends them to `sender`. A lost
/// connection is made again (after 1 s, then up to 30 s apart); each time the listener
/// (re)connects it sends [`Changed::Any`], since notices may have been missed meanwhile. The
/// returned handle tells whether it still runs.
pub(super) fn start(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    schema: Arc<str>,
    store: Arc<str>,
    sender: broadcast::Sender<Changed>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        loop {
            let mut listening = false;
            let listened = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listen(&config, &tls, &schema, &sender, &mut listening) => r,
            };
            if listening {
                // It listened before it failed: the next failure starts the pauses again.
                pause = Duration::from_secs(1);
            }
            match listened {
                Ok(()) => {
                    tracing::warn!(store = %store, "the connection that listens for changed plans closed; listening again in {pause:?}")
                }
                Err(e) => {
                    tracing::warn!(store = %store, error = %e, "listening for changed plans failed; listening again in {pause:?}")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    })
}

/// How often the listening connection is checked (a connection cut without a word — a
/// failover, a NAT that forgot it — would otherwise wait for the kernel's keepalive, hours).
const PING_EVERY: Duration = Duration::from_secs(30);

/// One connection's worth of listening: returns when the connection ends or stops answering.
/// `listening` is set once `LISTEN` took effect.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    schema: &str,
    tx: &broadcast::Sender<Changed>,
    listening: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut pinging: Option<
        std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>,
    > = None;
    // The connection is driven by reading its messages, also while a statement runs.
    loop {
        tokio::select! {
            r = &mut listen, if !*listening => {
                r?;
                *listening = true;
                let _ = tx.send(Changed::Any);
            }
            _ = ping.tick(), if *listening && pinging.is_none() => {
                let client = &client;
                pinging = Some(Box::pin(async move {
                    tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1"))
                        .await
                        .is_ok_and(|r| r.is_ok())
                }));
            }
            alive = async { pinging.as_mut().expect("guarded").await }, if pinging.is_some() => {
                pinging = None;
                if !alive {
                    return Ok(());
                }
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(changed) = parse(schema, n.payload()) {
                        let _ = tx.send(changed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_schema_and_plans_once_each_and_says_any_when_they_do_not_fit() {
        let a = PlanId::new_v7();
        let b = PlanId::new_v7();
        let text = payload("ops", [b, a, b]);
        assert_eq!(parse("ops", &text), Some(Changed::Plans(vec![a, b].into())));
        assert_eq!(parse("other", &text), None);
        let many = payload("ops", (0..1_000).map(|_| PlanId::new_v7()));
        assert_eq!(many, "ops *");
        assert_eq!(parse("ops", &many), Some(Changed::Any));
        assert!(payload("ops", (0..200).map(|_| PlanId::new_v7())).len() < MAX_PAYLOAD);
        assert_eq!(
            parse("ops", &control_payload("ops", a)),
            Some(Changed::Control(a))
        );
    }
}
