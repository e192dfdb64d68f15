//! The `coercion` binary against a store filled by real runs: completed, failed, hostile, and a
//! plan running in another process. Also the web server's HTTP behaviour (the browser tests
//! are in `cli_browser.rs`).

mod cli_support;

use std::time::Duration;

use cli_support::*;
#[path = "../../tests/support/prometheus.rs"]
mod prometheus;
use coercion::storage::{SqliteStore, Store};
use coercion::{Plan, Status};

/// Not a test: the entry point of the child process that runs a long plan (see `Runner`).
#[test]
#[ignore = "the child process of other tests, started by them"]
fn child_process_entry() {
    child_entry();
}

#[test]
fn list_shows_every_plan_newest_first_and_filters() {
    let f = fixture("list");
    let out = ok(&f.db, &["list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "a header first: {out}"
    );
    assert_eq!(lines.len(), 5, "a header and four plans: {out}");
    // Newest first: the hostile plan ran last.
    assert!(lines[1].starts_with(&f.hostile.to_string()), "{out}");
    assert!(
        lines[2].starts_with(&f.failed.to_string())
            && lines[2].contains("Failed")
            && lines[2].contains("migrate db")
    );
    assert!(lines[3].starts_with(&f.completed.to_string()) && lines[3].contains("Completed"));
    assert!(
        !lines[3].contains("with"),
        "a plan without failures is just Completed: {}",
        lines[3]
    );
    // The plan that completed with a tolerated failure says so, with the count.
    assert!(
        lines[4].starts_with(&f.tolerated.to_string())
            && lines[4].contains("  Completed with 1 failed  ")
            && lines[4].ends_with("rollout api"),
        "{out}"
    );
    // The columns stay aligned around the longer status.
    let name_column = |l: &str| l.find("deploy web").or_else(|| l.find("rollout api"));
    assert_eq!(name_column(lines[3]), name_column(lines[4]), "{out}");
    assert!(
        lines[2].contains("(Block)"),
        "the failure reason is shown: {}",
        lines[2]
    );

    let failed = ok(&f.db, &["list", "--status", "failed"]);
    assert_eq!(failed.lines().count(), 3, "{failed}");
    assert!(!failed.contains("deploy web"));

    let both = ok(&f.db, &["list", "--status", "Completed,Failed"]);
    assert_eq!(both.lines().count(), 5, "{both}");

    let named = ok(&f.db, &["list", "--name", "deploy"]);
    assert_eq!(named.lines().count(), 2, "{named}");
    assert!(named.contains(&f.completed.to_string()));

    let grouped = ok(&f.db, &["list", "--group", &f.group.to_string()]);
    assert_eq!(grouped.lines().count(), 2, "{grouped}");
    assert!(grouped.contains(&f.completed.to_string()));

    let none = ok(&f.db, &["list", "--status", "running"]);
    assert!(none.starts_with("no plans match in "), "{none}");

    // Paging: one plan a page, with a hint to the next; a page of none is refused.
    let zero = coercion(&f.db, &["list", "--limit", "0"]);
    assert!(!zero.status.success());
    let zero = String::from_utf8_lossy(&zero.stderr);
    assert!(zero.contains("0 lists nothing: give 1 or more"), "{zero}");
    let page1 = ok(&f.db, &["list", "--limit", "1"]);
    assert!(
        page1.contains(&f.hostile.to_string()) && page1.contains("--offset 1"),
        "{page1}"
    );
    let page3 = ok(&f.db, &["list", "--limit", "1", "--offset", "2"]);
    assert!(
        page3.contains(&f.completed.to_string()) && page3.contains("--offset 3"),
        "{page3}"
    );
    let page4 = ok(&f.db, &["list", "--limit", "1", "--offset", "3"]);
    assert!(
        page4.contains(&f.tolerated.to_string())
            && page4.contains("Completed with 1 failed")
            && !page4.contains("--offset"),
        "{page4}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(&f.db, &["list", "--json"])).unwrap();
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            f.hostile.to_string(),
            f.failed.to_string(),
            f.completed.to_string(),
            f.tolerated.to_string()
        ]
    );

    let bad = coercion(&f.db, &["list", "--status", "sleeping"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown status `sleeping`"));
}

#[test]
fn show_prints_the_tree_with_statuses_durations_attempts_and_errors() {
    let f = fixture("show");
    let prefix = &f.failed.to_string()[..30];
    let out = ok(&f.db, &["show", prefix]);
    assert!(
        out.starts_with(&format!(
            "plan \"migrate db\" {}  Failed (reason: Block)",
            f.failed
        )),
        "{out}"
    );
    assert!(
        out.contains("actions: 1 completed, 1 failed, 0 running of 3"),
        "{out}"
    );
    assert!(out.contains("  block[0] \"db\": Failed"), "{out}");
    assert!(out.contains("    sequence[0] \"db-1\": Failed"), "{out}");
    assert!(
        out.contains("      action[0] \"backup\": Completed"),
        "{out}"
    );
    let migrate = out
        .lines()
        .find(|l| l.contains("action[1] \"migrate\""))
        .unwrap();
    assert!(
        migrate.contains("Failed") && migrate.ends_with(", 3 attempts"),
        "{migrate}"
    );
    assert!(migrate.contains("ms"), "a duration: {migrate}");
    assert!(
        out.contains(&format!(
            "        error: {FAILED_TAG}: scripted failure on attempt 3"
        )),
        "the last error under the action: {out}"
    );
    assert!(
        out.contains("      action[2] \"verify\": NotStarted"),
        "{out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "no colour when not writing to a terminal"
    );

    let coloured = ok(&f.db, &["--color", "always", "show", prefix]);
    assert!(
        coloured.contains("\u{1b}[1m\u{1b}[31mFailed") || coloured.contains("\u{1b}[31m"),
        "red failures: {coloured:?}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&f.db, &["show", "--json", prefix])).unwrap();
    assert_eq!(json["id"], f.failed.to_string());
    assert_eq!(json["status"], "Failed");
    assert_eq!(json["reason"], "Block");
    let objects = json["objects"].as_array().unwrap();
    let migrate = objects
        .iter()
        .find(|o| {
            o["path"]
                .as_str()
                .unwrap()
                .ends_with("action[1] \"migrate\"")
        })
        .unwrap();
    assert_eq!(migrate["attempts"], 3);
    assert_eq!(migrate["status"], "Failed");
    assert!(
        migrate["last_error"]
            .as_str()
            .unwrap()
            .starts_with(FAILED_TAG)
    );

    // A plan that completed with a tolerated failure says so on its first line, and the
    // failed action's error is under it.
    let tolerated = ok(&f.db, &["show", &f.tolerated.to_string()]);
    assert!(
        tolerated.starts_with(&format!(
            "plan \"rollout api\" {}  Completed with 1 failed  ",
            f.tolerated
        )),
        "{tolerated}"
    );
    assert!(
        tolerated.contains("    sequence[1] \"api-2\": Failed")
            && tolerated.contains(&format!("        error: {TOLERATED_TAG}: ")),
        "{tolerated}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&f.db, &["show", "--json", &f.tolerated.to_string()])).unwrap();
    assert_eq!(json["status"], "Completed");
    assert_eq!(json["status_label"], "Completed with 1 failed");
    assert_eq!(json["failure_counts"]["sequences"], 3);
    assert_eq!(json["failure_counts"]["failed_sequences"], 1);
    assert_eq!(json["failure_counts"]["failed_actions"], 1);
    let coloured = ok(
        &f.db,
        &["--color", "always", "show", &f.tolerated.to_string()],
    );
    assert!(
        coloured.contains("\u{1b}[33mCompleted with 1 failed"),
        "amber (yellow), not green: {coloured:?}"
    );
    let plain = ok(&f.db, &["show", &f.completed.to_string()]);
    assert!(
        plain.starts_with(&format!("plan \"deploy web\" {}  Completed  ", f.completed)),
        "{plain}"
    );

    // Control characters in names cannot reach the terminal raw.
    let hostile = ok(&f.db, &["show", &f.hostile.to_string()]);
    assert!(
        hostile.contains("<script>window.__pwned=5</script>: scripted failure"),
        "{hostile}"
    );
}

#[test]
fn ids_may_be_abbreviated_to_a_unique_prefix_or_suffix_and_bad_ids_are_named() {
    let f = fixture("ids");
    // The last characters of a UUIDv7 are random: eight of them name one plan.
    let tail = &f.failed.to_string()[28..];
    let shown = ok(&f.db, &["show", tail]);
    assert!(shown.contains(&f.failed.to_string()), "{shown}");
    // UUIDv7s made within the same second share their first characters.
    let shared = &f.completed.to_string()[..4];
    assert_eq!(&f.failed.to_string()[..4], shared);
    let err = fails(&f.db, &["show", shared]);
    assert!(
        err.contains(&format!("`{shared}` is ambiguous: 4 plans in")),
        "{err}"
    );
    assert!(
        err.contains(&f.failed.to_string()) && err.contains("migrate db"),
        "the candidates are listed: {err}"
    );

    let unknown = "ffffffff";
    let err = fails(&f.db, &["show", unknown]);
    assert!(
        err.contains("no plan with an id starting or ending with `ffffffff` in ")
            && err.contains("coercion.db"),
        "{err}"
    );

    let missing = uuid::Uuid::now_v7().to_string();
    let err = fails(&f.db, &["export", &missing]);
    assert!(err.contains(&format!("no plan {missing} in")), "{err}");

    let err = fails(&f.db, &["show", "not-an-id!"]);
    assert!(err.contains("`not-an-id!` is not a plan id"), "{err}");

    // Without dashes, upper case: still found.
    let simple = f.completed.0.simple().to_string().to_uppercase();
    assert!(ok(&f.db, &["show", &simple[..20]]).contains("deploy web"));
}

#[test]
fn missing_foreign_and_locked_files_get_clear_errors() {
    let dir = TempDir::new("bad_files");
    let missing = dir.join("nothing-here.db");
    let err = fails(&missing, &["list"]);
    assert!(
        err.contains("nothing-here.db: no such file") && err.contains("--db"),
        "{err}"
    );

    let text = dir.join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, just some text that is long enough to be read as a header",
    )
    .unwrap();
    let err = fails(&text, &["list"]);
    assert!(
        err.contains("notes.txt") && err.contains("not a SQLite database"),
        "{err}"
    );

    let err = fails(&dir.0, &["list"]);
    assert!(err.contains("not a file"), "{err}");

    let other = dir.join("other-app.db");
    {
        let conn = rusqlite::Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
            .unwrap();
    }
    let err = fails(&other, &["list"]);
    assert!(err.contains("other-app.db"), "{err}");

    // A program holding an exclusive lock on the file (not a coercion writer: those let
    // readers in).
    let f = fixture("locked");
    let conn = rusqlite::Connection::open(&f.db).unwrap();
    conn.execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; UPDATE schema_version SET version = version;")
        .unwrap();
    let err = fails(&f.db, &["list"]);
    assert!(
        err.contains("coercion.db is locked by another program"),
        "{err}"
    );
    drop(conn);
    assert!(
        ok(&f.db, &["list"]).contains("deploy web"),
        "readable again once the lock is gone"
    );
}

#[test]
fn export_prints_the_display_clone_as_json() {
    let f = fixture("export");
    let out = ok(&f.db, &["export", &f.completed.to_string()[..32]]);
    let exported = Plan::from_json(&out).expect("the export is a plan");
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        SqliteStore::open_read_only(&f.db)
            .unwrap()
            .read(f.completed)
            .await
            .unwrap()
    });
    assert_eq!(exported, stored.clone_for_display());
    assert_eq!(exported.status(), Status::Completed);

    let file = f.dir.join("plan.json");
    let msg = ok(
        &f.db,
        &[
            "export",
            &f.completed.to_string(),
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        msg.contains("wrote plan") && msg.contains("plan.json"),
        "{msg}"
    );
    assert_eq!(
        Plan::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap(),
        exported
    );
}

/// The opening tags of the `<details>` elements of class `class` in `html`.
fn details_tags<'a>(html: &'a str, class: &str) -> Vec<&'a str> {
    let start = format!("<details class=\"{class}\"");
    html.match_indices(&start)
        .map(|(i, _)| &html[i..i + html[i..].find('>').unwrap()])
        .collect()
}

/// The plan page or report of the fixture's plan that completed with a tolerated failure.
fn assert_completed_with_failures_page(html: &str) {
    assert!(
        html.contains(
            "<span class=\"badge s-completed-with-failures\">Completed with 1 failed</span>"
        ),
        "the amber badge with the count: {html}"
    );
    assert!(
        !html.contains("<span class=\"badge s-completed\">Completed</span></h1>"),
        "not the green badge"
    );
    assert!(
        html.contains("<section class=\"failure-report completed-with-failures\">"),
        "the failure report is shown: {html}"
    );
    assert!(html.find("Failure report").unwrap() < html.find("Plan tree").unwrap());
    let report = &html[html.find("Failure report").unwrap()..html.find("Plan tree").unwrap()];
    assert!(
        report.contains("Completed with 1 failed")
            && report.contains("1 of 3 sequences failed")
            && report.contains(&format!("error: {TOLERATED_TAG}: ")),
        "{report}"
    );
    let failed_actions = details_tags(html, "node action s-failed");
    assert_eq!(failed_actions.len(), 1, "{html}");
    assert!(
        failed_actions[0].ends_with(" open"),
        "the failed action starts open: {}",
        failed_actions[0]
    );
    assert!(
        details_tags(html, "node action s-completed")
            .iter()
            .all(|t| !t.ends_with(" open")),
        "completed actions stay closed"
    );
    assert!(html.contains(&format!("<span class=\"error-message\">{TOLERATED_TAG}: ")));
}

#[test]
fn report_writes_one_self_contained_escaped_html_file() {
    let f = fixture("report");
    let file = f.dir.join("failed.html");
    let msg = ok(
        &f.db,
        &[
            "report",
            &f.failed.to_string(),
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        msg.contains("wrote the report of plan") && msg.contains("(Failed)"),
        "{msg}"
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains("Failure report"),
        "the failure report is at the top"
    );
    assert!(html.find("Failure report").unwrap() < html.find("Plan tree").unwrap());
    assert!(
        html.contains(&format!("{FAILED_TAG}: scripted failure on attempt 3")),
        "errors are in the tree"
    );
    assert!(html.contains("Attempt 3"));
    assert!(html.contains("<style>"), "CSS inline");
    for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
        assert!(
            !html.contains(external),
            "nothing external ({external}) in the report"
        );
    }
    assert!(html.contains("Content-Security-Policy") && html.contains("default-src 'none'"));

    let file = f.dir.join("hostile.html");
    ok(
        &f.db,
        &[
            "report",
            &f.hostile.to_string(),
            "-o",
            file.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(
        !html.contains("<script"),
        "no script element at all in the report"
    );
    assert!(!html.contains("<img"), "the hostile <img> is text");
    assert!(html.contains(
        "&lt;script&gt;document.title=&quot;pwned&quot;;window.__pwned=1&lt;/script&gt;"
    ));
    assert!(html.contains("&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;"));
    assert!(html.contains("&lt;/summary&gt;&lt;/details&gt;&lt;script&gt;window.__pwned=3"));

    // A plan that completed with a tolerated failure: the amber badge with the count, the
    // failure report, and its failed action open with the error.
    let file = f.dir.join("tolerated.html");
    ok(
        &f.db,
        &[
            "report",
            &f.tolerated.to_string(),
            "-o",
            file.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert_completed_with_failures_page(&html);

    let err = fails(
        &f.db,
        &[
            "report",
            &f.failed.to_string(),
            "-o",
            f.dir.join("no/such/dir.html").to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("cannot write") && err.contains("no/such/dir.html"),
        "{err}"
    );
}

#[test]
fn a_plan_running_in_another_process_is_shown_and_controlled() {
    let f = fixture("running");
    let mut runner = Runner::start(&f.db, 12, Duration::from_millis(800), "stdin");
    let id = runner.plan.to_string();

    // The CLI reads while the other process writes.
    runner.wait_running(&f.db);
    let listed = ok(&f.db, &["list", "--status", "running"]);
    assert!(
        listed.contains(&id) && listed.contains("rolling restart (live)"),
        "{listed}"
    );
    let shown = ok(&f.db, &["show", &id]);
    assert!(
        shown.contains("Running") && shown.contains("running for"),
        "{shown}"
    );
    wait_until(
        &f.db,
        runner.plan,
        Duration::from_secs(30),
        "an action completed",
        |j| {
            j["objects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["kind"] == "action" && o["status"] == "Completed")
        },
    );

    // No control channel yet: the CLI says why it cannot pause the plan.
    let err = fails(&f.db, &["pause", &id]);
    assert!(
        err.contains(
            "no process accepts control requests (stop, pause, resume, retry, approve, reject) for"
        ) && err.contains("does not exist"),
        "{err}"
    );

    runner.start_listening();
    let out = ok(&f.db, &["pause", &id[..30]]);
    assert!(out.contains(&format!("plan {id} is paused")), "{out}");
    wait_until(
        &f.db,
        runner.plan,
        Duration::from_secs(10),
        "the plan is paused",
        |j| j["paused"] == true,
    );
    assert!(
        ok(&f.db, &["show", &id])
            .lines()
            .next()
            .unwrap()
            .contains("paused")
    );
    let out = ok(&f.db, &["resume", &id]);
    assert!(out.contains("is resumed"), "{out}");
    wait_until(
        &f.db,
        runner.plan,
        Duration::from_secs(10),
        "the plan is resumed",
        |j| j["paused"] == false,
    );

    let out = ok(&f.db, &["stop", &id]);
    assert!(out.contains("is stopping"), "{out}");
    let json = wait_until(
        &f.db,
        runner.plan,
        Duration::from_secs(30),
        "the plan stopped",
        |j| j["status"] == "Stopped",
    );
    assert_eq!(json["reason"], "Stopped");
    assert!(runner.wait_for("DONE ").contains("Stopped"));

    // Finished plans cannot be controlled.
    let err = fails(&f.db, &["stop", &id]);
    assert!(
        err.contains("has already ended (Stopped); there is nothing to stop"),
        "{err}"
    );
    let err = fails(&f.db, &["pause", &f.completed.to_string()]);
    assert!(err.contains("has already ended (Completed)"), "{err}");
}

#[test]
fn retry_runs_the_failed_work_in_the_listening_process_and_both_plans_show_the_link() {
    let f = fixture("retry");
    let failed = f.failed.to_string();
    let runner = Runner::start(&f.db, 30, Duration::from_millis(500), "now");
    let running = runner.plan.to_string();

    let err = fails(&f.db, &["retry", &running]);
    assert!(
        err.contains("has not ended (Running); only an ended plan can be retried"),
        "{err}"
    );

    let out = ok(&f.db, &["retry", &failed[..30]]);
    let new = out
        .split("is retried as plan ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("the new plan's id: {out}"))
        .to_owned();
    assert!(
        out.starts_with(&format!("plan {failed} is retried as plan {new}")),
        "{out}"
    );

    // Who asked: the Unix user the kernel names for the CLI's connection.
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let retry: serde_json::Value =
        serde_json::from_str(&ok(&f.db, &["show", &new, "--json"])).unwrap();
    assert_eq!(retry["retry_of"]["plan"], failed.as_str(), "{retry:#}");
    let by = retry["retry_of"]["requested_by"].as_str().unwrap();
    assert!(by.ends_with(&format!("(uid {})", uid.trim())), "{by}");
    let old: serde_json::Value =
        serde_json::from_str(&ok(&f.db, &["show", &failed, "--json"])).unwrap();
    let group = match &old["group_id"] {
        serde_json::Value::Null => failed.as_str().into(),
        g => g.clone(),
    };
    assert_eq!(
        retry["group_id"], group,
        "the retry is in the group of the plan it retries"
    );
    assert_eq!(old["retried_by"], new.as_str(), "{old:#}");
    assert!(ok(&f.db, &["show", &new]).contains(&format!("retry of plan {failed}, asked by {by}")),);
    assert!(ok(&f.db, &["show", &failed]).contains(&format!("retried by plan {new}")));

    // A second retry of the same plan would run its work twice at once: refused.
    let err = fails(&f.db, &["retry", &failed]);
    assert!(
        err.contains(&format!(
            "plan {failed} cannot be retried: plan {new} already retries it"
        )),
        "{err}"
    );
    // A plan that completed has nothing to retry.
    let err = fails(&f.db, &["retry", &f.completed.to_string()]);
    assert!(err.contains("none of its sequences failed"), "{err}");

    // Without a listening process: a clear error, nothing stored.
    drop(runner);
    let before = ok(&f.db, &["list", "--json"]);
    let err = fails(&f.db, &["retry", &f.tolerated.to_string()]);
    assert!(
        err.contains(
            "no process accepts control requests (stop, pause, resume, retry, approve, reject) for"
        ),
        "{err}"
    );
    assert_eq!(ok(&f.db, &["list", "--json"]), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_sigkill_the_interrupted_attempt_and_the_resumption_are_shown_by_show_and_the_web_page()
 {
    let f = tokio::task::spawn_blocking(|| fixture("killed"))
        .await
        .unwrap();
    let db = f.db.clone();
    // 6 actions of 1.5 s, one at a time; killed while one of them runs.
    let runner = Runner::start(&db, 6, Duration::from_millis(1500), "no");
    let id = runner.plan;
    let (db2, runner) = (db.clone(), runner);
    let runner = tokio::task::spawn_blocking(move || {
        wait_until(
            &db2,
            id,
            Duration::from_secs(30),
            "an attempt is running",
            |j| {
                j["objects"].as_array().unwrap().iter().any(|o| {
                    o["kind"] == "action" && o["status"] == "Running" && o["attempts"] == 1
                })
            },
        );
        // While its process lives, the plan runs on it.
        let text = ok(&db2, &["show", &id.to_string(), "--color", "never"]);
        assert!(
            text.contains("runs on pid ") && !text.contains("no process runs it"),
            "{text}"
        );
        runner
    })
    .await
    .unwrap();
    // Dropping the runner sends SIGKILL and reaps the process.
    drop(runner);

    // Nobody runs the plan now: the faces say so instead of "runs on <the dead process>".
    let (db2, sid) = (db.clone(), id.to_string());
    let (text, json, listed) = tokio::task::spawn_blocking(move || {
        (
            ok(&db2, &["show", &sid, "--color", "never"]),
            ok(&db2, &["show", "--json", &sid]),
            ok(&db2, &["list", "--color", "never"]),
        )
    })
    .await
    .unwrap();
    assert!(
        text.contains("ran on pid ")
            && text.contains("no process runs it now: the process that ran it stopped")
            && !text.contains("runs on pid"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["stranded"], true, "{json:#}");
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("no process runs it"), "{line}");
    let server = Server::start(&db, &[]);
    let page = get_text(&format!("{}/plans/{id}", server.url)).await;
    assert!(
        page.contains("<dt>Ran on</dt>")
            && page.contains(r#"<dd class="s-stopped" id="stranded">no process runs it now"#),
        "the plan page says nobody runs the plan: {page}"
    );
    let list_page = get_text(&format!("{}/", server.url)).await;
    assert!(
        list_page.contains("Running, but no process runs it"),
        "the list page says so too: {list_page}"
    );
    drop(server);

    // A new process (here, this one) resumes the plan from the file.
    let fakes = coercion::testing::Fakes::new();
    let ws = coercion::Workstream::open(&db, fakes.registry())
        .await
        .unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed);
    drop(ws);

    let (db2, sid) = (db.clone(), id.to_string());
    let (json, text, listed, listed_json) = tokio::task::spawn_blocking(move || {
        (
            ok(&db2, &["show", "--json", &sid]),
            ok(&db2, &["show", &sid, "--color", "never"]),
            ok(&db2, &["list", "--color", "never"]),
            ok(&db2, &["list", "--json"]),
        )
    })
    .await
    .unwrap();
    // The list says so too.
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.ends_with("[resumed once]"), "{line}");
    let summaries: serde_json::Value = serde_json::from_str(&listed_json).unwrap();
    let summary = summaries
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.to_string())
        .unwrap();
    assert_eq!(summary["resumptions"], 1);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cut: Vec<&serde_json::Value> = json["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["interrupted_attempts"] == 1)
        .collect();
    assert_eq!(cut.len(), 1, "one action was cut short: {json:#}");
    assert_eq!(
        cut[0]["attempts"], 2,
        "the interrupted attempt and the re-run"
    );
    assert_eq!(cut[0]["status"], "Completed");
    assert!(text.contains("2 attempts (1 interrupted)"), "{text}");
    // The resumption: when, and by which process (this one).
    let resumptions = json["resumptions"].as_array().unwrap();
    assert_eq!(resumptions.len(), 1, "{json:#}");
    let by = resumptions[0]["by"].as_str().unwrap();
    assert!(
        by.starts_with(&format!("pid {} on ", std::process::id())),
        "{by}"
    );
    assert!(
        text.contains("resumed once: ") && text.contains(by),
        "{text}"
    );
    // Who ran it: the killed process started it, this one resumed it and ran it last.
    let owners = json["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 2, "{json:#}");
    assert_eq!(owners[0]["resumed"], false, "{json:#}");
    assert_eq!(owners[1]["resumed"], true, "{json:#}");
    assert_eq!(owners[1]["by"], by);
    let first = owners[0]["by"].as_str().unwrap();
    assert!(first.starts_with("pid ") && first != by, "{json:#}");
    assert_eq!(
        summary["owner"]["by"], by,
        "list --json names the last owner"
    );
    assert!(text.contains(&format!("ran on {by} since ")), "{text}");

    let server = Server::start(&db, &[]);
    let page = get_text(&format!("{}/plans/{id}", server.url)).await;
    assert!(page.contains("2 attempts (1 interrupted)"), "{page}");
    assert!(
        page.contains(r#"<dd id="resumptions">resumed once:"#) && page.contains(by),
        "the plan page says it was resumed, when and by whom"
    );
    assert!(
        page.contains(&format!(r#"<dd id="owner">{by} since "#)),
        "the plan page says which process ran it last"
    );
    // Each attempt names the process that ran it: the interrupted one the killed process,
    // the re-run this one.
    for owner in [first, by] {
        assert!(
            page.contains(&format!(r#", by <span class="owner">{owner}</span>"#)),
            "no attempt names {owner}"
        );
    }
    let list_page = get_text(&format!("{}/", server.url)).await;
    assert!(
        list_page.contains(r#"<span class="badge paused resumed">resumed once</span>"#),
        "the list page marks the resumed plan"
    );
    assert!(
        page.contains(r#"<li class="attempt interrupted">"#)
            && page.contains("attempt 1 was interrupted: the process running the plan stopped"),
        "the interrupted attempt is listed with its cause"
    );
}

/// The body of a GET of `url` (which must answer).
async fn get_text(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The events of a server-sent stream: each event's name and its data as JSON (`end` has none).
fn feed_events(feed: &str) -> Vec<(String, serde_json::Value)> {
    feed.split("\n\n")
        .filter_map(|event| {
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))?
                .to_owned();
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            Some((name, data))
        })
        .collect()
}

/// The plan statuses a live page's feed sent go from `first` to `last`.
fn assert_feed_goes(feed: &str, first: &str, last: &str) {
    let statuses: Vec<String> = feed_events(feed)
        .iter()
        .filter_map(|(_, data)| Some(data.get("status")?.as_str()?.to_owned()))
        .collect();
    assert_eq!(statuses.first().map(String::as_str), Some(first), "{feed}");
    assert_eq!(statuses.last().map(String::as_str), Some(last), "{feed}");
}

/// A live page is rendered once, then sent only what changed: the head, and the nodes whose
/// state or attempts changed or that run — never the whole tree again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_page_gets_the_whole_plan_once_then_only_what_changed() {
    let f = tokio::task::spawn_blocking(|| fixture("live_patches"))
        .await
        .unwrap();
    let runner = tokio::task::spawn_blocking({
        let db = f.db.clone();
        // 30 actions of 150 ms in 15 sequences, one at a time, run by another process.
        move || Runner::start(&db, 30, Duration::from_millis(150), "no")
    })
    .await
    .unwrap();
    let server = Server::start(&f.db, &[]);
    let feed = get_text(&format!("{}/plans/{}/events", server.url, runner.plan)).await;
    let events = feed_events(&feed);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"plan"), "{names:?}");
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    let first = events[0].1["html"].as_str().unwrap();
    assert_eq!(
        first.matches("class=\"node action ").count(),
        30,
        "the first event renders every action"
    );
    let patches: Vec<&serde_json::Value> = events
        .iter()
        .filter(|(n, _)| n == "patch")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(patches.len() + 2, events.len(), "{names:?}");
    assert!(patches.len() >= 3, "{names:?}");
    for patch in &patches {
        let nodes = patch["nodes"].as_array().unwrap();
        // What runs (an action, its sequence, the block) and what changed since the last poll
        // — a few nodes (more when polls come late, on a loaded machine), never all 46.
        assert!(nodes.len() < 23, "{patch:#}");
        assert!(
            patch["head"]
                .as_str()
                .unwrap()
                .contains("class=\"summary\"")
        );
        assert!(
            !patch.to_string().contains("plan-tree"),
            "never the whole tree"
        );
    }
    let last = patches.last().unwrap();
    assert_eq!(last["status"], "Completed");
    assert!(
        last["head"].as_str().unwrap().contains("30 completed"),
        "{last:#}"
    );
    // Every action was sent again once it changed: each ends Completed in some patch.
    let completed: std::collections::HashSet<&str> = patches
        .iter()
        .flat_map(|p| p["nodes"].as_array().unwrap())
        .filter(|n| {
            n["html"]
                .as_str()
                .is_some_and(|h| h.contains("data-status=\"Completed\""))
        })
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(completed.len(), 30);
    let total: usize = patches.iter().map(|p| p.to_string().len()).sum();
    assert!(
        total / patches.len() * 4 < first.len(),
        "a patch is a fraction of the page: {} bytes on average, the page {}",
        total / patches.len(),
        first.len()
    );
    drop(runner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_server_says_what_the_store_holds_for_prometheus() {
    let f = tokio::task::spawn_blocking(|| fixture("metrics"))
        .await
        .unwrap();
    let (runner, listed) = tokio::task::spawn_blocking({
        let db = f.db.clone();
        move || {
            // 40 actions of 500 ms, one at a time: Running while the page is read.
            let runner = Runner::start(&db, 40, Duration::from_millis(500), "no");
            wait_until(
                &db,
                runner.plan,
                Duration::from_secs(30),
                "an action runs",
                |j| {
                    j["objects"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|o| o["kind"] == "action" && o["status"] == "Running")
                },
            );
            let listed: serde_json::Value =
                serde_json::from_str(&ok(&db, &["list", "--json"])).unwrap();
            (runner, listed)
        }
    })
    .await
    .unwrap();
    let server = Server::start(&f.db, &[]);
    let response = http()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let page = response.text().await.unwrap();
    let sample = |series: &str| prometheus::sample(&page, series);
    // Plans by status: as `list` counts them (every status, zero included).
    for status in Status::ALL {
        let listed = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"]["status"] == status.as_str())
            .count();
        assert_eq!(
            sample(&format!("coercion_store_plans{{status=\"{status}\"}}")),
            listed as f64,
            "{status}"
        );
    }
    assert_eq!(sample("coercion_store_plans{status=\"Running\"}"), 1.0);
    // The running plan's 40 actions by status: one runs, none failed yet.
    let actions: f64 = Status::ALL
        .iter()
        .map(|s| {
            sample(&format!(
                "coercion_store_running_plan_actions{{status=\"{s}\"}}"
            ))
        })
        .sum();
    assert_eq!(actions, 40.0);
    assert_eq!(
        sample("coercion_store_running_plan_actions{status=\"Running\"}"),
        1.0
    );
    assert_eq!(
        sample("coercion_store_running_plan_actions{status=\"Failed\"}"),
        0.0
    );
    assert_eq!(sample("coercion_store_paused_plans"), 0.0);
    // A heartbeat comes after the start: its age is at most the plan's.
    let running_for = sample("coercion_store_oldest_running_plan_age_seconds");
    let heartbeat = sample("coercion_store_heartbeat_age_seconds");
    assert!(
        running_for > 0.0 && (0.0..=running_for).contains(&heartbeat),
        "{running_for} {heartbeat}"
    );
    drop(runner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_server_serves_escaped_pages_events_uploads_and_refuses_what_it_must() {
    let f = tokio::task::spawn_blocking(|| fixture("serve"))
        .await
        .unwrap();
    let server = Server::start(&f.db, &[]);
    let client = http();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{}{path}", server.url);
        async move { client.get(url).send().await.unwrap() }
    };

    let list = get("/".into()).await;
    assert_eq!(list.status(), 200);
    let csp = list.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let body = list.text().await.unwrap();
    assert!(body.contains("deploy web") && body.contains("migrate db"));
    assert!(
        body.contains("&lt;script&gt;document.title=&quot;pwned&quot;"),
        "names are escaped"
    );
    assert!(!body.contains("<script>document.title"), "never raw");

    let filtered = get("/?status=Failed&name=migrate".into())
        .await
        .text()
        .await
        .unwrap();
    assert!(filtered.contains("migrate db") && !filtered.contains("deploy web"));
    let bad = get("/?status=Sleeping&group=xyz".into())
        .await
        .text()
        .await
        .unwrap();
    assert!(
        bad.contains("unknown status `Sleeping`") && bad.contains("`xyz` is not a group id"),
        "{bad}"
    );

    // An abbreviated id redirects to the plan's page.
    let short = &f.failed.to_string()[..28];
    let redirect = get(format!("/plans/{short}")).await;
    assert_eq!(redirect.status(), 303);
    assert_eq!(
        redirect.headers()["location"],
        format!("/plans/{}", f.failed)
    );
    let page = get(format!("/plans/{}", f.failed))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Failure report") && page.contains(FAILED_TAG));
    assert!(!page.contains("data-events"), "a finished plan is not live");
    assert!(
        details_tags(&page, "node action s-failed")
            .iter()
            .all(|t| !t.ends_with(" open")),
        "a failed plan's failed action starts closed, as before"
    );

    // A plan that completed with a tolerated failure: an amber badge with the count in the
    // list, and on its page, the failure report and the failed action open with its error.
    assert!(
        body.contains(&format!(
            "<tr data-plan=\"{}\"><td><span class=\"badge s-completed-with-failures\">Completed with 1 failed</span>",
            f.tolerated
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "<tr data-plan=\"{}\"><td><span class=\"badge s-completed\">Completed</span>",
            f.completed
        )),
        "{body}"
    );
    let tolerated = get(format!("/plans/{}", f.tolerated))
        .await
        .text()
        .await
        .unwrap();
    assert_completed_with_failures_page(&tolerated);
    assert!(
        !page.contains("/stop\""),
        "no control buttons on a read-only server"
    );
    let missing = get("/plans/ffffffff".into()).await;
    assert_eq!(missing.status(), 404);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("no plan with an id starting or ending with `ffffffff`")
    );

    // The live feed of a finished plan: its body once, then the end.
    let events = get(format!("/plans/{}/events", f.failed)).await;
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let events = events.text().await.unwrap();
    assert!(events.starts_with("event: plan\ndata: {"), "{events}");
    assert!(events.contains("event: end"), "{events}");

    let export = get(format!("/plans/{}/export", f.completed)).await;
    assert!(
        export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert_eq!(
        Plan::from_json(&export.text().await.unwrap()).unwrap().id(),
        f.completed
    );
    let report = get(format!("/plans/{}/report", f.hostile))
        .await
        .text()
        .await
        .unwrap();
    assert!(report.starts_with("<!DOCTYPE html>") && !report.contains("<script"));

    // Uploads: a plan renders; malformed, empty, binary and oversized files are refused clearly.
    let upload = |body: Vec<u8>| {
        let client = client.clone();
        let url = format!("{}/upload", server.url);
        async move { client.post(url).body(body).send().await.unwrap() }
    };
    let exported = coercion::storage::SqliteStore::open_read_only(&f.db)
        .unwrap()
        .read(f.hostile)
        .await
        .unwrap()
        .to_json();
    let shown = upload(exported.into_bytes()).await;
    assert_eq!(shown.status(), 200);
    let shown = shown.text().await.unwrap();
    assert!(
        shown.contains("Showing the uploaded plan") && shown.contains("&lt;img src=x"),
        "{shown}"
    );
    assert!(!shown.contains("<img") && !shown.contains("<script"));
    let malformed = upload(b"{\"name\": \"half a plan\", ".to_vec()).await;
    assert_eq!(malformed.status(), 400);
    assert!(
        malformed
            .text()
            .await
            .unwrap()
            .contains("This file is not an exported coercion plan: EOF while parsing")
    );
    let wrong = upload(br#"{"hello": "<script>x</script>"}"#.to_vec())
        .await
        .text()
        .await
        .unwrap();
    assert!(
        wrong.contains("not an exported coercion plan: missing field"),
        "{wrong}"
    );
    let empty = upload(Vec::new()).await.text().await.unwrap();
    assert!(empty.contains("The file is empty"));
    let binary = upload(vec![0xff, 0xfe, 0x00, 0x81])
        .await
        .text()
        .await
        .unwrap();
    assert!(binary.contains("not text (not UTF-8)"));
    let huge = upload(vec![b' '; coercion::cli::web::UPLOAD_LIMIT + 1]).await;
    assert_eq!(huge.status(), 413);
    // Only from the server's own pages: another site's form or script is refused.
    let foreign = client
        .post(format!("{}/upload", server.url))
        .header("origin", "http://evil.example")
        .body(b"{}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(foreign.text().await.unwrap().contains("own upload page"));

    // Read-only: control requests are refused.
    let post = client
        .post(format!("{}/plans/{}/stop", server.url, f.failed))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403);
    assert!(post.text().await.unwrap().contains("read-only"));

    // DNS rebinding: a request naming another host is refused.
    let rebound = client
        .get(format!("{}/", server.url))
        .header("host", "evil.example:3030")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_control_the_web_ui_stops_a_plan_of_another_process() {
    let f = tokio::task::spawn_blocking(|| fixture("serve_control"))
        .await
        .unwrap();
    let runner = tokio::task::spawn_blocking({
        let db = f.db.clone();
        move || Runner::start(&db, 40, Duration::from_millis(500), "now")
    })
    .await
    .unwrap();
    let server = Server::start(&f.db, &["--allow-control"]);
    let client = http();
    let page = client
        .get(format!("{}/plans/{}", server.url, runner.plan))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("action=\"/plans/{}/stop\"", runner.plan)),
        "a stop button"
    );
    assert!(
        page.contains(&format!("data-events=\"/plans/{}/events\"", runner.plan)),
        "the page is live"
    );

    // A form posted from another site is refused.
    let csrf = client
        .post(format!("{}/plans/{}/stop", server.url, runner.plan))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), 403);

    let stopped = client
        .post(format!("{}/plans/{}/stop", server.url, runner.plan))
        .header("origin", server.url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    assert!(
        stopped
            .text()
            .await
            .unwrap()
            .contains("Asked the process running this plan to stop it.")
    );
    let db = f.db.clone();
    let id = runner.plan;
    tokio::task::spawn_blocking(move || {
        wait_until(&db, id, Duration::from_secs(30), "the plan stopped", |j| {
            j["status"] == "Stopped"
        })
    })
    .await
    .unwrap();

    // Once finished, the process no longer runs it: the server says so.
    let again = client
        .post(format!("{}/plans/{}/pause", server.url, runner.plan))
        .header("origin", server.url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let again = again.text().await.unwrap();
    assert!(
        again.contains("is not running in the process that runs plans from this store")
            || again.contains(
                "no process accepts control requests (stop, pause, resume, retry, approve, reject)"
            ),
        "{again}"
    );
    drop(runner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_cli_the_report_or_the_web_ui() {
    let (dir, db, id) = tokio::task::spawn_blocking(|| secret_fixture("secrets"))
        .await
        .unwrap();
    let id = id.to_string();
    let (db2, id2) = (db.clone(), id.clone());
    // The directory comes back, so the store outlives the blocking task.
    let (dir, outputs) = tokio::task::spawn_blocking(move || {
        let report = dir.join("report.html");
        ok(&db2, &["report", &id2, "-o", report.to_str().unwrap()]);
        let outputs = vec![
            ok(&db2, &["show", &id2]),
            ok(&db2, &["show", "--json", &id2]),
            ok(&db2, &["export", &id2]),
            ok(&db2, &["list", "--json"]),
            std::fs::read_to_string(report).unwrap(),
        ];
        (dir, outputs)
    })
    .await
    .unwrap();
    let export = &outputs[2];
    assert!(
        export.contains(r#"{"token":{"$secret":"redacted"}}"#),
        "the export marks the secret as redacted: {export}"
    );

    let server = Server::start(&db, &[]);
    let client = http();
    let mut pages = outputs.clone();
    for path in ["", "/export", "/report", "/events"] {
        let url = format!("{}/plans/{id}{path}", server.url);
        pages.push(client.get(url).send().await.unwrap().text().await.unwrap());
    }
    for (i, page) in pages.iter().enumerate() {
        assert!(
            !page.contains(SECRET),
            "output {i} shows the secret: {page}"
        );
        // Not even sealed: every secret marker holds "redacted", not the encrypted value.
        let markers = page.matches("$secret").count();
        let redacted = page.matches("redacted").count();
        assert_eq!(
            markers, redacted,
            "output {i} shows a sealed secret: {page}"
        );
    }
    for i in [2, 4, 5, 6, 7] {
        assert!(
            pages[i].contains("$secret"),
            "output {i} shows where the secret was"
        );
    }
    assert!(
        pages[5].contains("redacted"),
        "the plan page shows that a secret was there"
    );
    drop(server);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_page_and_command_show_fifty_plans_a_page() {
    let (dir, db) = tokio::task::spawn_blocking(|| many_plans("paging", 51))
        .await
        .unwrap();
    let db2 = db.clone();
    let listed = tokio::task::spawn_blocking(move || ok(&db2, &["list"]))
        .await
        .unwrap();
    assert_eq!(
        listed.lines().count(),
        1 + 50 + 1,
        "header, 50 plans, the hint: {listed}"
    );
    assert!(
        listed.lines().nth(1).unwrap().ends_with("plan 50"),
        "newest first"
    );
    assert!(
        listed.ends_with("… more plans: add --offset 50 for the next page\n"),
        "{listed}"
    );

    let server = Server::start(&db, &[]);
    let client = http();
    let first = client
        .get(format!("{}/?name=plan", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(first.matches("<tr data-plan=").count(), 50);
    assert!(first.contains(">plan 50</bdi></a>") && !first.contains(">plan 0</bdi></a>"));
    assert!(
        first.contains("href=\"/?page=1&amp;name=plan\""),
        "a link to the next page keeps the filter"
    );
    assert!(!first.contains("Newer"));
    let second = client
        .get(format!("{}/?page=1&name=plan", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(second.matches("<tr data-plan=").count(), 1);
    assert!(
        second.contains(">plan 0</bdi></a>")
            && second.contains("Newer")
            && !second.contains("Older")
    );
    drop(server);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_a_deep_directory_is_controlled_through_a_short_private_socket() {
    use coercion::cli::control::{self, ControlOp};
    use coercion::testing::Fakes;
    use std::os::unix::fs::PermissionsExt as _;

    let dir = TempDir::new("deep");
    let mut deep = dir.0.clone();
    while deep.as_os_str().len() < 160 {
        deep.push("a-rather-long-directory-name");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let db = deep.join("coercion.db");
    assert!(
        db.as_os_str().len() + ".control".len() > 108,
        "a socket beside this store would exceed the Unix limit"
    );

    let fakes = Fakes::new();
    let ws = coercion::Workstream::open(&db, fakes.registry())
        .await
        .unwrap();
    let id = ws
        .submit(long_plan(4, Duration::from_secs(5)))
        .await
        .unwrap();
    ws.start(id).await.unwrap();
    let listener = control::listen(ws.clone(), &db)
        .await
        .expect("a store in a deep directory accepts control requests");

    let socket = listener.path().to_path_buf();
    assert!(socket.as_os_str().len() < 100, "{}", socket.display());
    assert_eq!(socket, control::socket_path(&db));
    // Every path to the file names the same socket; another file, another socket.
    let link = dir.join("link");
    std::os::unix::fs::symlink(&deep, &link).unwrap();
    assert_eq!(control::socket_path(&link.join("coercion.db")), socket);
    assert_ne!(control::socket_path(&dir.join("coercion.db")), socket);
    // Only its owner may reach it.
    let dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let socket_mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(socket_mode & 0o777, 0o600);

    control::request(&db, ControlOp::Pause, id).await.unwrap();
    assert!(ws.read(id).await.unwrap().is_paused());
    control::request(&link.join("coercion.db"), ControlOp::Stop, id)
        .await
        .unwrap();
    assert_eq!(ws.wait(id).await.unwrap().status(), Status::Stopped);
    drop(listener);
    assert!(!socket.exists(), "the socket is removed with its listener");
}

#[test]
fn backup_writes_a_consistent_copy_while_another_process_runs_plans() {
    let f = fixture("backup");
    let runner = Runner::start(&f.db, 12, Duration::from_millis(300), "none");
    runner.wait_running(&f.db);
    let copy = f.dir.0.join("copy.db");
    let out = ok(&f.db, &["backup", copy.to_str().unwrap()]);
    assert!(
        out.contains("wrote a consistent copy of") && out.contains("copy.db"),
        "{out}"
    );
    // The copy is a store of its own: the same plans, the running one included.
    let listed = ok(&copy, &["list"]);
    for id in [f.completed, f.failed, runner.plan] {
        assert!(listed.contains(&id.to_string()), "{id} missing: {listed}");
    }
    // An existing file is refused, and left as it was.
    let before = std::fs::read(&copy).unwrap();
    let err = fails(&f.db, &["backup", copy.to_str().unwrap()]);
    assert!(err.contains("the file exists"), "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
}

/// `prune` deletes the plans that ended longer ago than `--older-than` — never a running one —
/// names them (`--dry-run` deletes nothing, and works while another process runs plans); a
/// SQLite file is pruned only while no process runs plans from it, and the refusal names it.
#[test]
fn prune_deletes_the_plans_that_ended_before_the_cut_and_nothing_else() {
    let f = fixture("prune");
    let ended = [f.tolerated, f.completed, f.failed, f.hostile];
    let out = ok(&f.db, &["prune", "--older-than", "1h", "--dry-run"]);
    assert!(out.contains("would delete 0 plan(s) of"), "{out}");

    let runner = Runner::start(&f.db, 40, Duration::from_millis(300), "none");
    runner.wait_running(&f.db);
    let dry = ok(&f.db, &["prune", "--older-than", "0s", "--dry-run"]);
    for id in ended {
        assert!(dry.contains(&format!("would delete {id}")), "{id}: {dry}");
    }
    assert!(!dry.contains(&runner.plan.to_string()), "{dry}");
    assert!(dry.contains("would delete 4 plan(s)"), "{dry}");
    // Only failed plans, of one group: none (the group's plan completed).
    let group = f.group.to_string();
    let dry = ok(
        &f.db,
        &[
            "prune",
            "--older-than",
            "0s",
            "--dry-run",
            "--status",
            "Failed",
            "--group",
            &group,
        ],
    );
    assert!(dry.contains("would delete 0 plan(s)"), "{dry}");
    // The process running plans holds the file: refused, naming it, nothing deleted.
    let err = fails(&f.db, &["prune", "--older-than", "0s"]);
    assert!(
        err.contains("a SQLite store has one writer") && err.contains(&runner.pid().to_string()),
        "{err}"
    );
    assert!(ok(&f.db, &["list"]).contains(&f.completed.to_string()));
    let running = runner.plan;
    drop(runner);

    let out = ok(
        &f.db,
        &["prune", "--older-than", "0s", "--status", "Completed"],
    );
    assert!(out.contains(&format!("deleted {}", f.completed)), "{out}");
    assert!(out.contains("deleted 2 plan(s)"), "{out}");
    let out = ok(&f.db, &["prune", "--older-than", "0s"]);
    assert!(out.contains("deleted 2 plan(s)"), "{out}");
    let listed = ok(&f.db, &["list"]);
    for id in ended {
        assert!(
            !listed.contains(&id.to_string()),
            "{id} still listed: {listed}"
        );
    }
    // The killed process's plan is still Running in the file: kept.
    assert!(listed.contains(&running.to_string()), "{listed}");

    // Bad input, named.
    let err = fails(
        &f.db,
        &["prune", "--older-than", "1s", "--status", "Running"],
    );
    assert!(
        err.contains("--status Running: prune deletes only plans that ended"),
        "{err}"
    );
    let err = fails(&f.db, &["prune", "--older-than", "100000000years"]);
    assert!(
        err.contains("--older-than") && err.contains("too long ago"),
        "{err}"
    );
    let out = coercion(&f.db, &["prune", "--older-than", "5 parsecs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--older-than"),
        "{err}"
    );
    let missing = f.dir.0.join("missing.db");
    let err = fails(&missing, &["prune", "--older-than", "1d"]);
    assert!(err.contains("no such file"), "{err}");
    assert!(!missing.exists(), "prune created a store");
    // An empty file is not a store, and prune does not make it one.
    let empty = f.dir.0.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    fails(&empty, &["prune", "--older-than", "1d"]);
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "prune wrote to an empty file"
    );
}

/// A store in a directory this user cannot write to (a read-only mount, another user's
/// directory): SQLite cannot create `<db>-shm` beside it. With no process running plans from it,
/// the CLI reads the file as immutable and says so; while a process holds the writer's lock, or
/// when a write-ahead log waits beside the file, it refuses and says why (immutable reads could
/// see torn pages or miss committed writes). As root, the reader runs as `nobody`.
#[test]
fn a_store_in_a_directory_the_reader_cannot_write_is_read_as_immutable_when_no_writer_runs() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture("immutable");
    // A directory every user can traverse, holding a read-only one with the store.
    let outer = TempDir(
        std::env::temp_dir().join(format!("coercion-immutable-{}", coercion::PlanId::new_v7())),
    );
    std::fs::create_dir(&outer.0).unwrap();
    std::fs::set_permissions(&outer.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = outer.join("ro");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("coercion.db");
    std::fs::copy(&f.db, &db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The writer's lock file, as the process that wrote the store left it.
    std::fs::copy(f.dir.join("coercion.db.lock"), dir.join("coercion.db.lock")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let run = |args: &[&str]| {
        let mut cmd = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
            c
        } else {
            std::process::Command::new(BIN)
        };
        cmd.arg("--db")
            .arg(&db)
            .args(args)
            .env_remove("COERCION_DB")
            .output()
            .expect("run the coercion binary")
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // No writer: the plans are listed and shown, with a note on standard error.
    let out = run(&["list"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    for id in [f.completed, f.failed] {
        assert!(stdout.contains(&id.to_string()), "{id} missing: {stdout}");
    }
    assert!(
        stderr.contains("read as an immutable file") && stderr.contains("coercion.db-shm"),
        "{stderr}"
    );
    let out = run(&["show", &f.failed.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(FAILED_TAG));
    assert!(
        !dir.join("coercion.db-shm").exists(),
        "nothing is created beside the file"
    );

    // A process holds the writer's lock: refused, naming the reason and what to do.
    let lock = std::fs::File::open(dir.join("coercion.db.lock")).unwrap();
    lock.lock().unwrap();
    let out = run(&["list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    assert!(
        stderr.contains("a process runs plans from it") && stderr.contains("torn"),
        "{stderr}"
    );
    lock.unlock().unwrap();

    // A write-ahead log beside the file holds writes the file lacks: refused too.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("coercion.db-wal"), b"not yet checkpointed").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = run(&["list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    assert!(stderr.contains("coercion.db-wal"), "{stderr}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `coercion serve` beyond loopback: a token on every request, and `Host` checked against IP
/// addresses and the names it was told (no DNS rebinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_web_ui_requires_its_token_and_known_host_names() {
    use std::io::BufRead as _;
    let f = tokio::task::spawn_blocking(|| fixture("serve_token"))
        .await
        .unwrap();
    let start = |env_token: Option<&str>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--db")
            .arg(&f.db)
            .args([
                "serve",
                "--addr",
                "0.0.0.0:0",
                "--host-name",
                "ops.internal",
            ])
            .env_remove("COERCION_SERVE_TOKEN")
            .stdout(std::process::Stdio::piped());
        if let Some(t) = env_token {
            cmd.env("COERCION_SERVE_TOKEN", t);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line)
    };

    // A token made up at start, printed in the address to open.
    let (mut child, line) = start(None);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let made_up = url.split("?token=").nth(1).unwrap().to_owned();
    assert_eq!(made_up.len(), 64, "{line}");
    assert!(line.contains("requests must carry the token"), "{line}");
    let _ = child.kill();

    let token = "a-token-of-the-operators-0123456789";
    let (mut child, line) = start(Some(token));
    assert!(
        !line.contains(token),
        "a given token is not printed: {line}"
    );
    let port = line
        .split("0.0.0.0:")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let client = http();

    let resp = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("requires its token"));
    let resp = client
        .get(format!("{base}/"))
        .bearer_auth("a-wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let resp = client
        .get(format!("{base}/"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains(&f.completed.to_string())
    );

    // Opening the printed address keeps the token in a cookie and drops it from the address.
    let resp = client
        .get(format!("{base}/plans/{}?token={token}", f.completed))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("/plans/{}", f.completed)
    );
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let resp = client
        .get(format!("{base}/plans/{}", f.completed))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Host names: the ones it was told and IP addresses; not a rebinding page's own domain.
    for (host, status) in [
        ("ops.internal", 200),
        ("192.0.2.10", 200),
        ("evil.example", 421),
    ] {
        let resp = client
            .get(format!("{base}/"))
            .header("host", format!("{host}:{port}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "Host: {host}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Slow and idle clients cannot exhaust the web UI: connections over the limit are closed at
/// once, and a client that does not send its headers in time is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_bounded_in_number_and_in_time() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let f = tokio::task::spawn_blocking(|| fixture("serve_slow"))
        .await
        .unwrap();
    let db = coercion::cli::Db::open(&f.db).unwrap();
    let options = coercion::cli::web::WebOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        max_connections: 2,
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(coercion::cli::web::serve(db, options, move |addr| {
        let _ = tx.send(addr);
    }));
    let addr = rx.await.unwrap();

    // Two clients that send half a request and stall hold both slots…
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …so a third is closed without an answer.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf))
        .await
        .expect("closed at once, not left waiting")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf));

    // The stalled clients are disconnected once the header-read timeout passes…
    for s in &mut stalled {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("a stalled client is disconnected")
            .ok();
    }
    // …and the server answers again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = http().get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    server.abort();
}

/// A plugin only the test process has: the listening child lacks it.
#[coercion::plugin(name = "cli-test/only-here", manual)]
#[derive(Default)]
struct OnlyHere;

impl coercion::Plugin for OnlyHere {
    type Request = ();
    type Response = ();
    async fn execute(
        &self,
        _ctx: &coercion::plugin::Context,
        _req: (),
    ) -> Result<(), coercion::PluginError> {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
}

#[test]
fn show_names_the_plugins_the_listening_process_lacks_to_run_a_plan() {
    use coercion::prelude::*;
    let f = fixture("missing");
    // A process that has the plugin starts the plan and stops mid-action: the plan stays
    // Running in the file.
    let id = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ws = Workstream::open(&f.db, Registry::new().with(OnlyHere).unwrap())
            .await
            .unwrap();
        let plan =
            Plan::builder("needs a plugin")
                .block(Block::builder("b").sequence(
                    Sequence::builder("s").action(ActionSpec::new::<OnlyHere>("wait", ())),
                ))
                .build();
        ws.submit_and_start(plan).await.unwrap()
    });
    let id = id.to_string();
    // Without a listening process, `show` has nothing more to say.
    assert!(!ok(&f.db, &["show", &id]).contains("waiting:"));

    // A process without the plugin opens the store: it leaves the plan as it is, and says why.
    let runner = Runner::start(&f.db, 30, Duration::from_millis(500), "now");
    let out = ok(&f.db, &["show", &id, "--color", "never"]);
    assert!(
        out.contains(
            "waiting: the process that runs plans from this store lacks the plugins \
             \"cli-test/only-here\" and leaves the plan as it is"
        ),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&f.db, &["show", "--json", &id])).unwrap();
    assert_eq!(
        json["missing_plugins"],
        serde_json::json!(["cli-test/only-here"])
    );
    assert_eq!(json["status"], "Running");
    // A plan the process runs has nothing missing.
    let live: serde_json::Value =
        serde_json::from_str(&ok(&f.db, &["show", "--json", &runner.plan.to_string()])).unwrap();
    assert!(live.get("missing_plugins").is_none(), "{live:#}");
    drop(runner);
}

/// The faces on a PostgreSQL store: `list`, `show`, `export`, `report` and `serve` (its plan
/// page, `/metrics`, and a live page fed while a plan runs in another process — this one),
/// with `--db postgres://…`. Connecting changes nothing in the database (an unknown schema is
/// refused, not created); what needs a SQLite file says so.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_web_ui_read_a_postgresql_store() {
    use coercion::storage::{PostgresOptions, PostgresStore};
    use coercion::testing::{FakeAction, FakeReq, Fakes};
    use coercion::{ActionSpec, Block, Sequence, Workstream};

    let Some(url) = pg_url("the CLI on PostgreSQL") else {
        return;
    };
    let schema = format!("t_cli_{}", coercion::PlanId::new_v7().0.simple());
    let db = std::path::PathBuf::from(&url);
    let with_schema = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--pg-schema".to_owned(), schema.clone()]);
        all
    };
    let cli_ok = |args: &[&str]| {
        let args = with_schema(args);
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                ok(&db, &args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .unwrap()
        }
    };
    let cli_fails = |args: &[&str]| {
        let args = with_schema(args);
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                fails(&db, &args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .unwrap()
        }
    };

    // Before any worker created the schema: refused, and still not there after.
    let err = cli_fails(&["list"]).await;
    assert!(
        err.contains(&format!("schema {schema:?} holds no coercion store"))
            && err.contains("--pg-schema"),
        "{err}"
    );
    let (sql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let found: bool = sql
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!found, "the CLI created the schema");

    let store = PostgresStore::connect_with(&url, PostgresOptions::default().schema(&schema))
        .await
        .unwrap();
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let plan = |name: &str, req: FakeReq, actions: usize| {
        Plan::builder(name)
            .block(Block::builder("b").sequence((0..actions).fold(
                Sequence::builder("s"),
                |s, i| {
                    s.action(ActionSpec::new::<FakeAction>(
                        format!("step {i}"),
                        req.clone(),
                    ))
                },
            )))
            .build()
    };
    let done = ws
        .run(plan("deploy on postgres", FakeReq::ok(), 2))
        .await
        .unwrap();

    // A password kept out of the URL: a role that must give one (scram-sha-256 in pg_hba.conf,
    // scripts/with-postgres.sh) connects with the password from PGPASSWORD or a private
    // password file, and a refusal says where the password came from.
    sql.batch_execute(
        "DO $$ BEGIN CREATE ROLE coercion_pw LOGIN SUPERUSER; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         ALTER ROLE coercion_pw PASSWORD 'pw-for-tests'",
    )
    .await
    .unwrap();
    let pw_url = url.replacen("://coercion@", "://coercion_pw@", 1);
    assert_ne!(pw_url, url, "{url}");
    let dir = TempDir::new("pgpass");
    let passfile = dir.join("pgpass");
    let port = url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(
        &passfile,
        format!("# ours\n127.0.0.1:{port}:*:coercion_pw:pw-for-tests\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let done_id = done.id().to_string();
    let list_with = |env: Vec<(&'static str, String)>| {
        let args = with_schema(&["--db", &pw_url, "list"]);
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(BIN)
                .args(&args)
                .env_remove("PGPASSWORD")
                .env("PGPASSFILE", "/nonexistent/pgpass")
                .envs(env)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (code, out, err) = list_with(vec![("PGPASSFILE", passfile.display().to_string())])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&done_id), "{out}");
    let (code, out, err) = list_with(vec![("PGPASSWORD", "pw-for-tests".to_owned())])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&done_id), "{out}");
    let (code, _, err) = list_with(vec![("PGPASSWORD", "wrong".to_owned())])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("password authentication failed") && err.contains("from PGPASSWORD"),
        "{err}"
    );
    let (code, _, err) = list_with(vec![]).await.unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "no password was found in the URL, PGPASSWORD or a matching line of /nonexistent/pgpass"
        ),
        "{err}"
    );
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = list_with(vec![("PGPASSFILE", passfile.display().to_string())])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("was ignored: others can read or write it (mode 0644)")
            && err.contains("chmod 600"),
        "{err}"
    );
    let failed = ws
        .run(plan(
            "migrate on postgres",
            FakeReq::fail_permanently().tag("disk full"),
            1,
        ))
        .await
        .unwrap();

    let listed = cli_ok(&["list", "--color", "never"]).await;
    assert!(
        listed.contains("deploy on postgres") && listed.contains("migrate on postgres"),
        "{listed}"
    );
    let shown = cli_ok(&["show", &done.id().to_string()[28..], "--color", "never"]).await;
    assert!(
        shown.contains("Completed") && shown.contains("step 1"),
        "{shown}"
    );
    let exported = cli_ok(&["export", &failed.id().to_string()]).await;
    assert_eq!(
        Plan::from_json(&exported).unwrap().status(),
        Status::Failed,
        "{exported}"
    );
    let report = cli_ok(&["report", &failed.id().to_string(), "-o", "-"]).await;
    assert!(
        report.contains("disk full"),
        "the failure report names the error"
    );
    let err = cli_fails(&["backup", "/tmp/never-written.db"]).await;
    assert!(
        err.contains("backup")
            && err.contains("works on SQLite store files only")
            && err.contains("is not one"),
        "{err}"
    );
    assert!(!std::path::Path::new("/tmp/never-written.db").exists());
    // Control goes through the database: refused for an ended plan, carried out by the worker
    // that holds a running one.
    let err = cli_fails(&["stop", &failed.id().to_string()]).await;
    assert!(err.contains("has already ended (Failed)"), "{err}");
    let worker = ws
        .spawn_worker(
            coercion::worker::WorkerOptions::default().poll_interval(Duration::from_millis(100)),
        )
        .unwrap();
    let long = ws
        .submit(plan(
            "controlled on postgres",
            FakeReq::sleep(Duration::from_millis(300)),
            30,
        ))
        .await
        .unwrap();
    ws.start(long).await.unwrap();
    let paused = cli_ok(&["pause", &long.to_string()]).await;
    assert!(paused.contains("is paused"), "{paused}");
    assert!(store.read(long).await.unwrap().is_paused());
    let resumed = cli_ok(&["resume", &long.to_string()]).await;
    assert!(resumed.contains("is resumed"), "{resumed}");
    // The web UI with --allow-control sends its requests the same way.
    {
        let server = Server::start(&db, &["--pg-schema", &schema, "--allow-control"]);
        let page = get_text(&format!("{}/plans/{long}", server.url)).await;
        assert!(
            page.contains(&format!("action=\"/plans/{long}/pause\"")),
            "no Pause button on a PostgreSQL plan's page"
        );
        let answer = http()
            .post(format!("{}/plans/{long}/pause", server.url))
            .header("origin", server.url.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let text = answer.text().await.unwrap();
        assert!(text.contains("to pause it"), "{text}");
        assert!(store.read(long).await.unwrap().is_paused());
    }
    let stopped = cli_ok(&["stop", &long.to_string()]).await;
    assert!(stopped.contains("is stopping"), "{stopped}");
    let ended = ws.wait(long).await.unwrap();
    assert_eq!(ended.status(), Status::Stopped);
    worker.stop().await;

    let server = Server::start(&db, &["--pg-schema", &schema]);
    let client = http();
    let page = client
        .get(format!("{}/plans/{}", server.url, failed.id()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("migrate on postgres") && page.contains("disk full"));
    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        prometheus::sample(&metrics, "coercion_store_plans{status=\"Completed\"}"),
        1.0
    );
    assert_eq!(
        prometheus::sample(&metrics, "coercion_store_plans{status=\"Failed\"}"),
        1.0
    );

    // Live: the page's feed follows a plan this process runs, to its end.
    let id = ws
        .submit(plan(
            "live on postgres",
            FakeReq::sleep(Duration::from_millis(400)),
            4,
        ))
        .await
        .unwrap();
    ws.start(id).await.unwrap();
    let feed = client
        .get(format!("{}/plans/{id}/events", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_feed_goes(&feed, "Running", "Completed");
    assert!(feed.contains("event: end"), "{feed}");

    // Retention: a prune deletes the failed plan while the workstream is still connected.
    let failed_id = failed.id().to_string();
    let out = cli_ok(&["prune", "--older-than", "0s", "--status", "Failed"]).await;
    assert!(
        out.contains(&format!("deleted {failed_id}")) && out.contains("deleted 1 plan(s)"),
        "{out}"
    );
    let listed = cli_ok(&["list"]).await;
    assert!(!listed.contains(&failed_id), "{listed}");
    assert!(listed.contains(&id.to_string()), "{listed}");

    // A Running plan whose lease nobody holds (its process stopped, no worker took it over) is
    // named so, not "runs on" the process that held it last.
    {
        use coercion::storage::{Change, SharedStore};
        let short = PostgresStore::connect_with(
            &url,
            PostgresOptions::default()
                .schema(&schema)
                .lease(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        let orphan = coercion::storage::contract::sample_plan("left by its process");
        short.create(&orphan).await.unwrap();
        short.acquire(orphan.id()).await.unwrap();
        let started = [Change::State {
            loc: coercion::workflow::Loc::Plan,
            id: orphan.id().0,
            state: coercion::State {
                status: Status::Running,
                start: Some(chrono::Utc::now()),
                end: None,
            },
        }];
        short.apply(orphan.id(), &started).await.unwrap();
        let oid = orphan.id().to_string();
        let held = cli_ok(&["show", &oid, "--color", "never"]).await;
        assert!(!held.contains("no process runs it"), "{held}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let shown = cli_ok(&["show", &oid, "--color", "never"]).await;
        assert!(
            shown.contains("no process runs it now: no live process holds its lease"),
            "{shown}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&cli_ok(&["show", "--json", &oid]).await).unwrap();
        assert_eq!(json["stranded"], true, "{json:#}");
        let listed = cli_ok(&["list", "--color", "never"]).await;
        let line = listed
            .lines()
            .find(|l| l.starts_with(&oid))
            .unwrap_or_else(|| panic!("{listed}"));
        assert!(line.contains("no process runs it"), "{line}");
    }
    drop(ws);
}

/// A workstream over `store` (shared with the test) with the fake plugins, and their fakes.
async fn fakes_workstream(
    store: std::sync::Arc<dyn coercion::storage::Store>,
) -> (coercion::Workstream, coercion::testing::Fakes) {
    let fakes = coercion::testing::Fakes::new();
    let ws = coercion::Workstream::builder()
        .shared_store(store)
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    (ws, fakes)
}

/// A plan of `steps` sleeps of `step`, submitted (not started) to a workstream over `inner`
/// wrapped to count its whole-plan reads, and a web UI over that store with `options` (on a
/// free port of loopback).
struct CountedLive<S> {
    store: std::sync::Arc<coercion::storage::RecordingStore<S>>,
    ws: coercion::Workstream,
    id: coercion::PlanId,
    addr: std::net::SocketAddr,
    _fakes: coercion::testing::Fakes,
}

impl<S: coercion::storage::Store> CountedLive<S> {
    async fn start(
        inner: S,
        steps: usize,
        step: Duration,
        options: coercion::cli::web::WebOptions,
    ) -> CountedLive<S> {
        use std::sync::Arc;

        use coercion::storage::RecordingStore;
        use coercion::testing::{FakeAction, FakeReq};
        use coercion::{ActionSpec, Block, Sequence};

        let store = Arc::new(RecordingStore::new(inner));
        let (ws, fakes) = fakes_workstream(store.clone()).await;
        let plan = Plan::builder("watched")
            .block(
                Block::builder("b").sequence((0..steps).fold(Sequence::builder("s"), |s, i| {
                    s.action(ActionSpec::new::<FakeAction>(
                        format!("step {i}"),
                        FakeReq::sleep(step),
                    ))
                })),
            )
            .build();
        let id = ws.submit(plan).await.unwrap();
        let options = coercion::cli::web::WebOptions {
            addr: ([127, 0, 0, 1], 0).into(),
            ..options
        };
        let db = coercion::cli::Db::from_store(store.clone(), "counting");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(coercion::cli::web::serve(db, options, move |addr| {
            let _ = tx.send(addr);
        }));
        let addr = rx.await.unwrap();
        CountedLive {
            store,
            ws,
            id,
            addr,
            _fakes: fakes,
        }
    }

    /// The whole feed of one viewer of the plan's live page.
    fn view(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let url = format!("http://{}/plans/{}/events", self.addr, self.id);
        async move { http().get(url).send().await.unwrap().text().await.unwrap() }
    }
}

/// Every viewer of a live plan is fed by one store poll per interval, not one each: ten
/// viewers of a running plan cost about what one does (a SQLite store: it does not tell of
/// changes, so the page polls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewers_of_a_live_plan_share_one_store_poll() {
    use coercion::storage::Store as _;

    let dir = TempDir::new("viewers");
    let sqlite = SqliteStore::open(dir.join("coercion.db")).unwrap();
    assert!(sqlite.changes().is_none(), "the page would not poll");
    let poll = Duration::from_millis(50);
    let live = CountedLive::start(
        sqlite,
        6,
        Duration::from_millis(250),
        coercion::cli::web::WebOptions {
            poll_interval: poll,
            ..Default::default()
        },
    )
    .await;
    live.ws.start(live.id).await.unwrap();
    let started = std::time::Instant::now();
    let before = live.store.reads();
    let feeds = futures_util::future::join_all((0..10).map(|_| live.view())).await;
    let reads = live.store.reads() - before;
    let polls = started.elapsed().as_millis() / poll.as_millis() + 1;
    for feed in &feeds {
        let events = feed_events(feed);
        assert_eq!(events.first().map(|e| e.0.as_str()), Some("plan"));
        assert_eq!(events.last().map(|e| e.0.as_str()), Some("end"));
        let last = &events[events.len() - 2].1;
        assert_eq!(last["status"], "Completed", "{feed}");
    }
    // One poller: at most one read per interval (and a few for viewers that arrive as a
    // poller ends). Ten pollers would read about ten times as often.
    assert!(
        reads as u128 <= polls + 10,
        "{reads} reads in {polls} poll intervals for 10 viewers"
    );
}

/// Over a store that tells of changed plans, a live page reads its plan when told, not on a
/// timer: a watched plan that does not change is not read again (here for a second, twenty
/// poll intervals), and a running one is followed to its end although the safety-net read
/// would come only after an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_page_over_a_store_that_tells_of_changes_reads_only_when_told() {
    use coercion::storage::Store as _;

    let live = CountedLive::start(
        coercion::storage::MemoryStore::new(),
        4,
        Duration::from_millis(100),
        coercion::cli::web::WebOptions {
            poll_interval: Duration::from_millis(50),
            notice_fallback: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await;
    // A memory store tells of every write.
    assert!(live.store.changes().is_some());
    let before = live.store.reads();
    let viewer = tokio::spawn(live.view());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = live.store.reads() - before;
    assert!(
        (1..=2).contains(&idle),
        "{idle} reads of a plan that did not change in a second (a poller would read ~20)"
    );
    live.ws.start(live.id).await.unwrap();
    let feed = tokio::time::timeout(Duration::from_secs(60), viewer)
        .await
        .expect("the feed follows the plan to its end")
        .unwrap();
    assert_feed_goes(&feed, "NotStarted", "Completed");
}

/// The plan page of a 100,000-action plan shows a page of each block's sequences — and every
/// one that failed, wherever it is — with links to the others, not the whole tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_plan_page_shows_a_page_of_sequences_and_what_failed() {
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(coercion::storage::MemoryStore::new());
    let (ws, _fakes) = fakes_workstream(store.clone()).await;
    large_plan_page(ws, store).await;
}

/// The same page over a SQLite file, which reads only the page of the plan
/// (`Store::read_page`): the same sequences, the failed ones joining it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_plan_page_over_sqlite_shows_the_same_page() {
    let dir = TempDir::new("large-page");
    let fakes = coercion::testing::Fakes::new();
    let ws = coercion::Workstream::builder()
        .sqlite(dir.join("plans.db"))
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let store = ws.store().clone();
    let id = large_plan_page(ws, store).await;

    // `show` pages the same way: the first 200 hosts and the failed ones, the whole plan's
    // counts, what it leaves out and the commands that show the rest.
    let db = dir.join("plans.db");
    let id = id.to_string();
    let hosts = |out: &str| {
        out.lines()
            .filter(|l| l.trim_start().starts_with("sequence["))
            .count()
    };
    let first = ok(&db, &["show", &id]);
    assert_eq!(hosts(&first), 202, "200, and the 2 failed hosts:\n{first}");
    assert!(first.contains("\"host-00199\"") && !first.contains("\"host-00200\""));
    assert!(first.contains("\"host-07321\"") && first.contains("\"host-08000\""));
    assert!(first.contains("of 100000"), "the whole plan's action count");
    assert!(
        first.contains("9798 more sequence(s) not shown (this page: 1–200 of 10000"),
        "{first}"
    );
    let coercion_db = command_line(&db);
    assert!(
        first.contains(&format!("next 200: {coercion_db} show {id} --from 200")),
        "the commands it suggests reach the same store: {first}"
    );
    assert!(!first.contains("previous 200"));
    let next = ok(&db, &["show", &id, "--from", "200"]);
    assert!(next.contains("\"host-00200\"") && !next.contains("\"host-00199\""));
    assert!(next.contains("this page: 201–400 of 10000"));
    assert!(next.contains(&format!("previous 200: {coercion_db} show {id} --from 0")));
    let all = ok(&db, &["show", &id, "--all"]);
    assert_eq!(hosts(&all), 10_000);
    assert!(!all.contains("not shown"));
    // Past the end: the failed hosts, and what there is; the previous page is the last one.
    let past = ok(&db, &["show", &id, "--from", "20000"]);
    assert_eq!(hosts(&past), 2, "{past}");
    assert!(past.contains("this page: none of 10000"), "{past}");
    assert!(
        past.contains(&format!(
            "previous 200: {coercion_db} show {id} --from 9800"
        )),
        "{past}"
    );
    // Any sequence number shows the page that holds it, as the web UI's `?from=` does.
    let odd = ok(&db, &["show", &id, "--from", "250"]);
    assert!(odd.contains("this page: 201–400 of 10000"), "{odd}");
    // A value that is not a sequence number is named as such.
    for bad in ["-1", "x", "99999999999999999999"] {
        let refused = coercion(&db, &["show", &id, "--from", bad]);
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains(&format!("`{bad}` is not a sequence number")),
            "{bad}: {err}"
        );
    }
    let refused = coercion(&db, &["show", &id, "--from", "200", "--json"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--json"));
}

/// Runs the checks of a 10,000-host plan's pages on `store`; returns the plan's id (two hosts
/// failed: 7,321 and 8,000).
async fn large_plan_page(
    ws: coercion::Workstream,
    store: std::sync::Arc<dyn Store>,
) -> coercion::PlanId {
    use coercion::storage::Change;
    use coercion::testing::{FakeAction, FakeReq};
    use coercion::workflow::Loc;
    use coercion::{ActionSpec, Block, Sequence, State};

    let plan = Plan::builder("ten thousand hosts")
        .block(Block::builder("fleet").sequences((0..10_000).map(|h| {
            (0..10).fold(Sequence::builder(format!("host-{h:05}")), |s, a| {
                s.action(ActionSpec::new::<FakeAction>(
                    format!("step {a}"),
                    FakeReq::ok(),
                ))
            })
        })))
        .build();
    let id = ws.submit(plan).await.unwrap();
    // One host far down the list failed.
    let stored = store.read(id).await.unwrap();
    let failed = stored.blocks()[0].sequences()[7_321].id();
    let now = chrono::Utc::now();
    store
        .apply(
            id,
            &[Change::State {
                loc: Loc::Sequence {
                    block: 0,
                    seq: 7_321,
                },
                id: failed,
                state: State {
                    status: Status::Failed,
                    start: Some(now),
                    end: Some(now),
                },
            }],
        )
        .await
        .unwrap();

    let db = coercion::cli::Db::from_store(store.clone(), store.describe());
    let options = coercion::cli::web::WebOptions {
        addr: ([127, 0, 0, 1], 0).into(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(coercion::cli::web::serve(db, options, move |addr| {
        let _ = tx.send(addr);
    }));
    let addr = rx.await.unwrap();
    let page = |query: &'static str| {
        let url = format!("http://{addr}/plans/{id}{query}");
        async move {
            let response = http().get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let sequences = |html: &str| html.matches("class=\"node sequence ").count();

    let first = page("").await;
    assert_eq!(sequences(&first), 201, "the first 200, and the failed one");
    assert!(first.contains("host-00199") && !first.contains("host-00200"));
    assert!(first.contains("host-07321"), "the failed host is shown");
    assert!(
        first.contains("9799 more sequence(s) not shown (this page: 1–200 of 10000"),
        "says what is left out"
    );
    assert!(first.contains("href=\"?from=200\"") && !first.contains("prev-page"));
    assert!(
        first.contains(&format!("data-events=\"/plans/{id}/events\"")),
        "the page is live"
    );
    let last = page("?from=9800").await;
    assert_eq!(sequences(&last), 201);
    assert!(last.contains("host-09999") && last.contains("host-07321"));
    assert!(last.contains("href=\"?from=9600\"") && !last.contains("next-page"));
    assert!(
        last.contains(&format!("data-events=\"/plans/{id}/events?from=9800\"")),
        "the live feed renders the same page"
    );
    // The whole tree would be tens of megabytes; a page is a small fraction of it.
    assert!(first.len() < 4_000_000, "{} bytes", first.len());

    // Live: a host off the page that fails joins the page, rendered again.
    let mut feed = http()
        .get(format!("http://{addr}/plans/{id}/events"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let mut events = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut failed_again = false;
    while std::time::Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(10), feed.chunk())
            .await
            .expect("the feed goes on")
            .unwrap()
            .expect("the feed is open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            events += 1;
            if events == 1 {
                assert!(event.starts_with("event: plan") && !event.contains("host-08000"));
                let seq = stored.blocks()[0].sequences()[8_000].id();
                let now = chrono::Utc::now();
                store
                    .apply(
                        id,
                        &[Change::State {
                            loc: Loc::Sequence {
                                block: 0,
                                seq: 8_000,
                            },
                            id: seq,
                            state: State {
                                status: Status::Failed,
                                start: Some(now),
                                end: Some(now),
                            },
                        }],
                    )
                    .await
                    .unwrap();
            } else if event.starts_with("event: plan") {
                assert!(event.contains("host-08000") && event.contains("host-07321"));
                failed_again = true;
            }
        }
        if failed_again {
            break;
        }
    }
    assert!(
        failed_again,
        "the page was rendered again with the host that failed"
    );
    drop(feed);

    // Any `from` is one of the pages the links name; at most 16 pages of a plan are followed
    // live at once.
    let odd = page("?from=250").await;
    assert!(
        odd.contains("this page: 201–400 of 10000"),
        "from=250 shows the page from 200"
    );
    // A short id is sent on to the whole one, on the same page.
    let whole = id.to_string();
    let short = &whole[whole.len() - 12..];
    let response = http()
        .get(format!("http://{addr}/plans/{short}?from=250"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        format!("/plans/{id}?from=200").as_str()
    );
    // A `from` that is not a number gets an error page that says so.
    let bad = http()
        .get(format!("http://{addr}/plans/{id}?from=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = bad.text().await.unwrap();
    assert!(bad.contains("<html"), "an HTML page: {bad}");
    assert!(
        bad.contains("query is not valid") && bad.contains("from"),
        "{bad}"
    );
    let mut feeds = Vec::new();
    for k in 0..16 {
        let response = http()
            .get(format!(
                "http://{addr}/plans/{id}/events?from={}",
                200 * k + 7
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "page {k}");
        feeds.push(response);
    }
    let refused = http()
        .get(format!("http://{addr}/plans/{id}/events?from=9800"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("16 pages of this plan are followed live already"),
        "{text}"
    );
    // A page followed already can be followed by one more viewer.
    let again = http()
        .get(format!("http://{addr}/plans/{id}/events?from=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    drop(feeds);
    drop(ws);
    id
}

#[test]
fn gates_are_approved_and_rejected_through_the_cli_as_the_unix_user() {
    let dir = TempDir::new("gates-cli");
    let db = dir.join("plans.db");
    let me = user_name();

    // Approved by an approver, with a comment: the plan goes on; the decision is in every face.
    let mut child = Runner::start_plan(&db, 0, Duration::ZERO, "now", &format!("gated:{me}"));
    let id = child.plan.to_string();
    let shown = wait_for_gate(&db, &id);
    assert!(
        shown.contains(&format!(
            "({} approve {id} 'promote canary')",
            command_line(&db)
        )),
        "{shown}"
    );
    // The web page (read-only here) says the same command line.
    let page = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = coercion::cli::Db::connect(&db, "public").await.unwrap();
        let options = coercion::cli::web::WebOptions {
            addr: ([127, 0, 0, 1], 0).into(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(coercion::cli::web::serve(store, options, move |addr| {
            let _ = tx.send(addr);
        }));
        let addr = rx.await.unwrap();
        let url = format!("http://{addr}/plans/{id}");
        http().get(url).send().await.unwrap().text().await.unwrap()
    });
    assert!(
        page.contains(&format!(
            "{} approve {id} 'promote canary'",
            command_line(&db)
        )),
        "{page}"
    );
    let listed = ok(&db, &["list"]);
    assert!(
        listed.contains("Running, waiting for approval: promote canary"),
        "{listed}"
    );
    let err = fails(&db, &["approve", &id, "promote"]);
    assert!(
        err.contains(r#"has no gate named "promote" (its gates: "promote canary")"#),
        "{err}"
    );
    let out = ok(
        &db,
        &[
            "approve",
            &id,
            "promote canary",
            "--comment",
            "canary <b>healthy</b>",
        ],
    );
    assert_eq!(
        out,
        format!("plan {id}: gate \"promote canary\" approved\n")
    );
    assert_eq!(child.wait_for("DONE"), "DONE Completed");
    let shown = ok(&db, &["show", &id]);
    let by = coercion::cli::control::current_user();
    assert!(
        shown.contains(&format!("gate \"promote canary\": approved by {by} at ")),
        "{shown}"
    );
    assert!(shown.contains(": canary <b>healthy</b>"), "{shown}");
    assert!(!shown.contains("waiting for approval"), "{shown}");
    let export: serde_json::Value = serde_json::from_str(&ok(&db, &["export", &id])).unwrap();
    assert_eq!(export["decisions"][0]["approved"], true, "{export:#}");
    assert_eq!(export["decisions"][0]["by"], by.as_str(), "{export:#}");
    assert_eq!(export["decisions"][0]["comment"], "canary <b>healthy</b>");
    let report = dir.join("report.html");
    ok(&db, &["report", "--output", report.to_str().unwrap(), &id]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("<q><bdi>canary &lt;b&gt;healthy&lt;/b&gt;</bdi></q>"),
        "the decision, escaped, in the report"
    );
    // Decided once: the plan has ended, so a second decision is refused.
    let err = fails(&db, &["reject", &id, "promote canary"]);
    assert!(err.contains("only a running plan waits at a gate"), "{err}");
    drop(child);

    // Rejected: the gate fails with who and why, the block fails, the rollback runs.
    let mut child = Runner::start_plan(&db, 0, Duration::ZERO, "now", "gated:");
    let id = child.plan.to_string();
    wait_for_gate(&db, &id);
    ok(
        &db,
        &[
            "reject",
            &id,
            "promote canary",
            "--comment",
            "error rate up",
        ],
    );
    assert_eq!(child.wait_for("DONE"), "DONE Failed");
    let shown = ok(&db, &["show", &id]);
    assert!(shown.contains("error: rejected: rejected by "), "{shown}");
    assert!(shown.contains(": error rate up"), "{shown}");
    assert!(
        shown.contains(r#"deferred batch[0] "roll back": Completed"#),
        "{shown}"
    );
    drop(child);

    // Not an approver: refused, and the plan still waits.
    let child = Runner::start_plan(&db, 0, Duration::ZERO, "now", "gated:someone-else");
    let id = child.plan.to_string();
    wait_for_gate(&db, &id);
    let err = fails(&db, &["approve", &id, "promote canary"]);
    assert!(
        err.contains(&format!(
            "{by} may not decide gate \"promote canary\" (approvers: someone-else)"
        )),
        "{err}"
    );
    wait_for_gate(&db, &id);
    drop(child);
}

#[test]
fn a_gate_of_a_process_that_does_not_listen_cannot_be_decided_and_says_why() {
    let dir = TempDir::new("gates-deaf");
    let db = dir.join("plans.db");
    // Runs the plan, holds the store, accepts no control request.
    let child = Runner::start_plan(&db, 0, Duration::ZERO, "", "gated:");
    let id = child.plan.to_string();
    wait_for_gate(&db, &id);
    let err = fails(&db, &["approve", &id, "promote canary"]);
    assert!(
        err.contains(&format!(r#"cannot approve gate "promote canary" of plan {id}: no process listens for your control requests on"#))
            && err.contains("a process holds the store (it runs its plans) but does not accept control requests from you"),
        "{err}"
    );
    wait_for_gate(&db, &id);
    drop(child);
}

#[test]
fn a_gate_approved_while_no_process_runs_its_plan_is_taken_after_the_restart() {
    let dir = TempDir::new("gates-restart");
    let db = dir.join("plans.db");
    let child = Runner::start_plan(&db, 0, Duration::ZERO, "now", "gated:");
    let id = child.plan.to_string();
    wait_for_gate(&db, &id);
    // SIGKILL: the plan stays Running, waiting at its gate, with nobody to ask.
    unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) };
    drop(child);
    let out = ok(
        &db,
        &[
            "approve",
            &id,
            "promote canary",
            "--comment",
            "approved offline",
        ],
    );
    assert!(
        out.contains("approved, recorded in")
            && out.contains("the gate takes this decision when a process resumes it"),
        "{out}"
    );
    // The next process resumes the plan, and the gate takes the recorded decision at once.
    let mut child = Runner::start_plan(&db, 0, Duration::ZERO, "", "resume");
    assert_eq!(child.plan.to_string(), id);
    assert_eq!(child.wait_for("DONE"), "DONE Completed");
    let shown = ok(&db, &["show", &id]);
    assert!(shown.contains("resumed once"), "{shown}");
    assert!(
        shown.contains(&format!(
            "gate \"promote canary\": approved by {} at ",
            coercion::cli::control::current_user()
        )),
        "{shown}"
    );
    assert!(shown.contains(": approved offline"), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&ok(&db, &["show", "--json", &id])).unwrap();
    let status = |path: &str| {
        json["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["path"] == path)
            .map(|o| o["status"].clone())
    };
    assert_eq!(
        status(r#"block[1] "fleet" / sequence[0] "host-1" / action[0] "deploy""#),
        Some("Completed".into()),
        "the fleet ran: {json:#}"
    );
    assert_eq!(
        json["decisions"][0]["comment"], "approved offline",
        "{json:#}"
    );
}
