//! `coercion/sleep`: wait for a duration.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::codes;
use crate::plugin::{Context, Plugin, PluginError};

/// The request of [`Sleep`]. In JSON: `{ "duration": "30s" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepReq {
    /// How long to wait.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

impl SleepReq {
    /// Waits for `duration`.
    pub fn new(duration: Duration) -> SleepReq {
        SleepReq { duration }
    }
}

/// How long it waited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepResp {
    /// The time slept.
    #[serde(with = "humantime_serde")]
    pub slept: Duration,
}

/// Waits (an action plugin, registered as `coercion/sleep`), e.g. to let a change settle
/// before the next step. It uses tokio's clock, so tests with a paused clock cost no time.
///
/// Errors ([`codes`](super::codes)): `CANCELLED` (permanent) when the plan is stopped during
/// the wait. A duration longer than the action's timeout makes the attempt time out.
///
/// ```
/// # use coercion::plugins::SleepReq;
/// # use std::time::Duration;
/// let req = SleepReq::new(Duration::from_secs(30));
/// ```
#[crate::plugin(preview, name = "coercion/sleep")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Sleep;

impl Plugin for Sleep {
    type Request = SleepReq;
    type Response = SleepResp;

    async fn execute(&self, ctx: &Context, req: SleepReq) -> Result<SleepResp, PluginError> {
        let started = Instant::now();
        tokio::select! {
            () = tokio::time::sleep(req.duration) => Ok(SleepResp { slept: started.elapsed() }),
            () = ctx.cancelled() => Err(PluginError::permanent(format!(
                "the sleep of {} was stopped with the plan after {}",
                crate::report::human_duration(req.duration),
                crate::report::human_duration(started.elapsed())
            ))
            .with_code(codes::CANCELLED)),
        }
    }
}

/// A sleep changes nothing: the preview says how long it would wait.
impl crate::Previews for Sleep {
    async fn preview(&self, _ctx: &Context, req: &SleepReq) -> Result<crate::Preview, PluginError> {
        Ok(crate::Preview::no_change(format!(
            "would wait {}",
            crate::report::human_duration(req.duration)
        )))
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sleeps_for_the_duration() {
        let ctx = Context::detached(Duration::from_secs(3600));
        let started = Instant::now();
        let resp = Sleep
            .execute(&ctx, SleepReq::new(Duration::from_secs(90)))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(90));
        assert_eq!(resp.slept, Duration::from_secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_plan_is_stopped() {
        let token = CancellationToken::new();
        let ctx = Context::detached(Duration::from_secs(3600)).with_cancellation(token.clone());
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            token.cancel();
        });
        let started = Instant::now();
        let err = Sleep
            .execute(&ctx, SleepReq::new(Duration::from_secs(600)))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(err.code, codes::CANCELLED);
        assert!(err.permanent);
        assert_eq!(
            err.message,
            "the sleep of 10m00s was stopped with the plan after 5s"
        );
        stopper.await.unwrap();
    }

    #[test]
    fn json_form() {
        let req: SleepReq = serde_json::from_str(r#"{"duration": "1m 30s"}"#).unwrap();
        assert_eq!(req, SleepReq::new(Duration::from_secs(90)));
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"duration":"1m 30s"}"#
        );
        assert!(serde_json::from_str::<SleepReq>(r#"{"duration": 90}"#).is_err());
    }
}
