// The complete example of docs/plan-macro.md (the README's `plan!` section), kept compiling and
// running here. Keep the two in sync.
use std::time::Duration;

use coercion::plugins::{
    Command, CommandReq, FileExists, FileExistsReq, HttpCheck, HttpCheckReq, TcpCheck, TcpCheckReq, WriteFile,
    WriteFileReq,
};
use coercion::prelude::*;
use coercion::{BlockBuilder, SequenceBuilder, block, plan, sequence};

/// One host's smoke test, checked exactly like a `sequence` written inside `plan!`.
fn smoke_test(host: &str) -> SequenceBuilder {
    sequence! {
        name: format!("smoke {host}"),
        action {
            name: "curl",
            plugin: Command,
            request: CommandReq::new("curl").arg("-fsS").arg(format!("http://{host}/health")),
            retries: 2,
        }
    }
}

/// A whole block built in a function of its own.
fn smoke_tests(hosts: &[String]) -> BlockBuilder {
    block! {
        name: "Smoke tests",
        concurrency: hosts.len().max(1),
        tolerated_failures: unlimited,
        ..hosts.iter().map(|h| smoke_test(h)),
    }
}

fn main() {
    let hosts: Vec<String> = (1..=4).map(|i| format!("web-{i}")).collect();
    let canary = true;

    let plan = plan! {
        name: "Deploy Server and Run",
        descr: "Deploys an HTTP server application to a cluster",
        pre_checks {
            action { name: "Load balancer listens", plugin: TcpCheck, request: TcpCheckReq::new("127.0.0.1", 8080) }
        }
        cont_checks {
            delay: 30s,
            action {
                name: "Load balancer healthy",
                plugin: HttpCheck,
                request: HttpCheckReq::get("http://127.0.0.1:8080/health"),
                timeout: 5s,
            }
        }
        block {
            name: "Deploy Server",
            concurrency: 2,
            tolerated_failures: 25%,
            entrance_delay: 500ms,
            for (i, host) in hosts.iter().enumerate() {
                sequence {
                    name: format!("Deploy to {host}"),
                    key: format!("deploy-{host}"),
                    action {
                        name: "Write config",
                        plugin: WriteFile,
                        request: WriteFileReq::text(format!("/srv/{host}/server.conf"), "port = 80\n"),
                    }
                    action {
                        name: "Copy Server Files",
                        plugin: Command,
                        request: CommandReq::new("scp").arg("server").arg(format!("{host}:/srv/{host}/")),
                        timeout: 5min,
                        retries: 3,
                    }
                    if canary && i == 0 {
                        action {
                            name: "Run canary",
                            plugin: Command,
                            request: CommandReq::new("ssh").arg(host.as_str()).arg("server --canary"),
                            timeout: 10s,
                        }
                    } else {
                        action {
                            name: "Run Server",
                            plugin: Command,
                            request: CommandReq::new("ssh").arg(host.as_str()).arg("server --port 80"),
                            timeout: Duration::from_secs(10),
                        }
                    }
                }
            }
            post_checks {
                for host in &hosts {
                    action {
                        name: format!("{host} answers"),
                        plugin: HttpCheck,
                        request: HttpCheckReq::get(format!("http://{host}/health")),
                    }
                }
            }
        }
        ..[smoke_tests(&hosts)],
        deferred_actions {
            batch {
                name: "Roll back",
                when: OnFailure,
                fail_plan: true,
                for host in &hosts {
                    action {
                        name: format!("Restore {host}"),
                        plugin: Command,
                        request: CommandReq::new("ssh").arg(host.as_str()).arg("server --restore"),
                        timeout: 2h,
                    }
                }
            }
            batch {
                name: "Notify",
                when: Always,
                action { name: "Tell on-call", plugin: Command, request: CommandReq::new("notify-oncall").arg("deploy done") }
            }
        }
        deferred_checks {
            action { name: "Audit log written", plugin: FileExists, request: FileExistsReq::new("/var/log/deploy.log") }
        }
    };

    assert_eq!(plan.blocks().len(), 2);
    assert_eq!(plan.blocks()[0].sequences().len(), 4);
    assert_eq!(plan.deferred().len(), 2);
    // Submit repeats the checks against the plugins actually registered, and runs each
    // plugin's own `validate` on its request.
    let registry = Registry::from_inventory().expect("no duplicate plugin names");
    coercion::workflow::validate_plan(&plan, &registry).expect("a valid plan");
}
