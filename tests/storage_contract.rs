//! The storage contract (`coercion::storage::contract`) run against every store: each check on
//! a fresh `MemoryStore` and on a fresh `SqliteStore` file (which must then pass SQLite's
//! integrity check), and the whole suite once more on one shared store of each kind.

use std::path::PathBuf;

use coercion::storage::{MemoryStore, SqliteOptions, SqliteStore, Store, contract};

/// A fresh directory under the target's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("storage_contract")
            .join(format!("{test}-{}", coercion::PlanId::new_v7()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("plans.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

macro_rules! contract_tests {
    ($($name:ident: |$store:ident| $check:expr;)*) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = MemoryStore::new();
                    let $store: &dyn Store = &store;
                    $check.await;
                }
            )*
        }

        /// With the default options: journals are folded when the writer is idle.
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = TempDir::new(concat!("sqlite-", stringify!($name)));
                    let store = SqliteStore::open_with(dir.db(), SqliteOptions::default())
                        .expect("open a fresh SQLite store");
                    {
                        let $store: &dyn Store = &store;
                        $check.await;
                    }
                    store.integrity_check().await.expect("the file passes the integrity check");
                }
            )*
        }
        /// Every commit is followed by a fold: reads come from the tables.
        mod sqlite_folding_every_commit {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = TempDir::new(concat!("sqlite_folding_every_commit-", stringify!($name)));
                    let store = SqliteStore::open_with(dir.db(), SqliteOptions::default().fold_limit(0))
                        .expect("open a fresh SQLite store");
                    {
                        let $store: &dyn Store = &store;
                        $check.await;
                    }
                    store.integrity_check().await.expect("the file passes the integrity check");
                }
            )*
        }
        /// No idle or limit folds: reads replay the journal (only a write that needs an attempt count the writer does not know folds its plan first).
        mod sqlite_never_folding {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = TempDir::new(concat!("sqlite_never_folding-", stringify!($name)));
                    let store = SqliteStore::open_with(dir.db(), SqliteOptions::default().fold_limit(usize::MAX).fold_when_idle(None))
                        .expect("open a fresh SQLite store");
                    {
                        let $store: &dyn Store = &store;
                        $check.await;
                    }
                    store.integrity_check().await.expect("the file passes the integrity check");
                }
            )*
        }
    };
}

contract_tests! {
    create_then_read: |store| contract::create_then_read(store);
    duplicate_create: |store| contract::duplicate_create(store);
    unknown_plan: |store| contract::unknown_plan(store);
    every_change_kind: |store| contract::every_change_kind(store);
    batches_are_atomic: |store| contract::batches_are_atomic(store);
    a_batch_applied_twice_reads_as_once: |store| contract::a_batch_applied_twice_reads_as_once(store);
    random_changes_seed_1: |store| contract::random_changes(store, 1, 200);
    random_changes_seed_2: |store| contract::random_changes(store, 2, 200);
    random_changes_seed_3: |store| contract::random_changes(store, 0xdead_beef, 200);
    random_changes_in_flight: |store| contract::random_changes_in_flight(store, 4, 400, 8);
    concurrent_applies_complete_in_order: |store| contract::concurrent_applies_complete_in_order(store, 500);
    list_filters_and_paging: |store| contract::list_filters_and_paging(store);
    delete_rules: |store| contract::delete_rules(store);
    prune_rules: |store| contract::prune_rules(store);
    large_plan: |store| contract::large_plan(store, 20_000);
    hostile_text: |store| contract::hostile_text(store);
    whole_suite_on_one_store: |store| contract::all(store);
}
