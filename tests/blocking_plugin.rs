//! A plugin that blocks its thread (synchronous work on the async runtime) is noticed: the
//! watchdog lists it while it blocks, and the plan's heartbeat stops renewing meanwhile.

use std::sync::Arc;
use std::time::Duration;

use coercion::prelude::*;
use coercion::storage::{MemoryStore, Store};

/// Sleeps with `std::thread::sleep`: exactly what a plugin must not do.
#[coercion::plugin(name = "test.block/sleep", manual)]
#[derive(Default)]
struct BlockingSleep;

impl Plugin for BlockingSleep {
    type Request = u64;
    type Response = ();
    async fn execute(&self, _ctx: &Context, millis: u64) -> Result<(), PluginError> {
        std::thread::sleep(Duration::from_millis(millis));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_blocks_its_thread_is_listed_and_holds_the_heartbeat() {
    let store = Arc::new(MemoryStore::new());
    let ws = Workstream::builder()
        .shared_store(store.clone())
        .registry(Registry::new().with(BlockingSleep).unwrap())
        .heartbeat_interval(Duration::from_millis(100))
        .blocking_threshold(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let plan = Plan::builder("blocks")
        .block(
            Block::builder("b").sequence(Sequence::builder("host-1").action(
                ActionSpec::new::<BlockingSleep>("block", 3000).timeout(Duration::from_secs(10)),
            )),
        )
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    assert!(ws.blocked_actions().is_empty() || ws.blocked_actions()[0].plan == id);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let blocked = ws.blocked_actions();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].plan, id);
    assert_eq!(blocked[0].plugin, "test.block/sleep");
    assert_eq!(
        blocked[0].path.to_string(),
        "block[0] \"b\" / sequence[0] \"host-1\" / action[0] \"block\""
    );
    assert!(blocked[0].blocked_for > Duration::from_millis(300));
    assert!(
        blocked[0]
            .to_string()
            .contains("has blocked its thread for")
    );

    // The heartbeat does not move while the plugin blocks.
    let before = store.read(id).await.unwrap().heartbeat();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = store.read(id).await.unwrap().heartbeat();
    assert_eq!(
        before, after,
        "the heartbeat was renewed while a plugin blocked"
    );

    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed);
    assert!(ws.blocked_actions().is_empty());
}

/// Blocks its thread until told to stop (or 20 s), and says when it ended.
#[coercion::plugin(name = "test.block/until", manual)]
#[derive(Clone, Default)]
struct BlockUntil {
    release: Arc<std::sync::atomic::AtomicBool>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Plugin for BlockUntil {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.release.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.ended.store(true, Ordering::SeqCst);
        Ok(())
    }
}

// One worker thread, which the plugin blocks: nothing of that runtime runs meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_control_socket_answers_busy_while_a_plugin_blocks_the_runtime() {
    use coercion::control::{self, ControlError, ControlOp};
    use std::sync::atomic::Ordering;

    let plugin = BlockUntil::default();
    let ws = Workstream::builder()
        .in_memory()
        .registry(Registry::new().with(plugin.clone()).unwrap())
        .blocking_threshold(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("coercion-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("coercion.db");
    let _control = control::listen(ws.clone(), &db).await.unwrap();
    let plan = Plan::builder("blocks")
        .block(Block::builder("b").sequence(
            Sequence::builder("host-1").action(
                ActionSpec::new::<BlockUntil>("block", ()).timeout(Duration::from_secs(60)),
            ),
        ))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();

    // The request comes from a thread and a runtime of its own: this test's runtime is blocked.
    let answer = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(control::request(&db, ControlOp::Pause, id))
    })
    .join()
    .unwrap();
    let still_blocked = !plugin.ended.load(Ordering::SeqCst);
    plugin.release.store(true, Ordering::SeqCst);
    assert!(
        still_blocked,
        "the answer came only after the plugin let go: {answer:?}"
    );
    match answer {
        Err(ControlError::Refused(message)) => {
            assert!(
                message.starts_with("busy: the runtime that runs plans is blocked ("),
                "{message}"
            );
            assert!(
                message.contains("action[0] \"block\"")
                    && message.contains("\"test.block/until\"")
                    && message.contains("the pause request is queued"),
                "{message}"
            );
        }
        other => panic!("expected a busy answer, got {other:?}"),
    }
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed);
    let _ = std::fs::remove_dir_all(&dir);
}
