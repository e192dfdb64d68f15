//! `coercion::inventory`: Ansible's documentation examples in both formats, `group_vars/` and
//! `host_vars/` precedence, host patterns, typed variables, and every malformed case with its
//! file, line and message.

use std::path::PathBuf;

use coercion::inventory::{Inventory, InventoryError};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inventory")
        .join(name)
}

fn names<'a>(hosts: impl IntoIterator<Item = &'a coercion::inventory::Host>) -> Vec<&'a str> {
    hosts.into_iter().map(|h| h.name()).collect()
}

fn select<'a>(inventory: &'a Inventory, pattern: &str) -> Vec<&'a str> {
    names(
        inventory
            .select(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}")),
    )
}

#[test]
fn documentation_groups_of_groups_read_the_same_in_both_formats() {
    for file in ["docs_groups.ini", "docs_groups.yml"] {
        let inventory = Inventory::load(fixture(file)).unwrap();
        assert_eq!(
            names(inventory.hosts()),
            [
                "mail.example.com",
                "foo.example.com",
                "bar.example.com",
                "one.example.com",
                "two.example.com",
                "three.example.com"
            ],
            "{file}"
        );
        assert_eq!(
            inventory.group("ungrouped").unwrap().hosts(),
            ["mail.example.com"],
            "{file}"
        );
        assert_eq!(
            inventory.group("prod").unwrap().hosts(),
            ["foo.example.com", "one.example.com", "two.example.com"],
            "{file}"
        );
        assert_eq!(
            inventory.group("prod").unwrap().children(),
            ["east"],
            "{file}"
        );
        assert_eq!(inventory.group("all").unwrap().hosts().len(), 6, "{file}");
        let foo = inventory.host("foo.example.com").unwrap();
        assert_eq!(
            foo.groups(),
            ["all", "prod", "webservers", "east"],
            "{file}"
        );
        assert!(foo.in_group("prod") && !foo.in_group("test"));
        assert_eq!(
            inventory.host("mail.example.com").unwrap().groups(),
            ["all", "ungrouped"],
            "{file}"
        );
        let mut top: Vec<&str> = inventory
            .group("all")
            .unwrap()
            .children()
            .iter()
            .map(String::as_str)
            .collect();
        top.sort_unstable();
        assert_eq!(
            top,
            ["dbservers", "prod", "test", "ungrouped", "webservers"],
            "{file}"
        );
    }
}

#[test]
fn documentation_variables_ranges_and_aliases_read_the_same_in_both_formats() {
    let ini = Inventory::load(fixture("docs_vars.ini")).unwrap();
    let yaml = Inventory::load(fixture("docs_vars.yml")).unwrap();
    for inventory in [&ini, &yaml] {
        let web = inventory.group("webservers").unwrap().hosts();
        assert_eq!(web.len(), 25);
        assert_eq!(web[0], "www01.example.com");
        assert_eq!(web[1], "www03.example.com");
        assert_eq!(web[24], "www49.example.com");
        assert_eq!(
            inventory.group("databases").unwrap().hosts(),
            [
                "db-a.example.com",
                "db-b.example.com",
                "db-c.example.com",
                "db-d.example.com",
                "db-e.example.com",
                "db-f.example.com"
            ]
        );

        let jumper = inventory.host("jumper").unwrap();
        assert_eq!(
            (jumper.address(), jumper.port()),
            ("192.0.2.50", Some(5555))
        );
        let badwolf = inventory.host("badwolf.example.com").unwrap();
        assert_eq!(
            (badwolf.address(), badwolf.port()),
            ("badwolf.example.com", Some(5309))
        );
        assert_eq!(
            inventory.host("other1.example.com").unwrap().user(),
            Some("myuser")
        );
        assert_eq!(inventory.host("localhost").unwrap().user(), None);
        assert_eq!(inventory.host("localhost").unwrap().port(), None);

        let host2 = inventory.host("host2").unwrap();
        assert_eq!(host2.var::<u16>("http_port").unwrap(), Some(303));
        assert_eq!(host2.var::<u32>("maxRequestsPerChild").unwrap(), Some(909));
        assert_eq!(
            host2.var::<String>("ntp_server").unwrap().as_deref(),
            Some("ntp.atlanta.example.com")
        );
        assert_eq!(host2.var::<i64>("halon_system_timeout").unwrap(), Some(30));
        assert_eq!(
            host2.var::<String>("some_server").unwrap().as_deref(),
            Some("foo.southeast.example.com")
        );
        assert_eq!(
            host2.groups(),
            ["all", "usa", "southeast", "atlanta", "raleigh"]
        );
        let host3 = inventory.host("host3").unwrap();
        assert_eq!(host3.var::<String>("ntp_server").unwrap(), None);
        assert_eq!(host3.var::<u8>("escape_pods").unwrap(), Some(2));
        assert_eq!(
            inventory.group("usa").unwrap().hosts(),
            ["host1", "host2", "host3"]
        );
        assert!(inventory.group("northeast").unwrap().hosts().is_empty());
    }
    assert_eq!(names(ini.hosts()), names(yaml.hosts()));
    for host in ini.hosts() {
        assert_eq!(Some(host), yaml.host(host.name()), "{}", host.name());
    }
}

#[test]
fn the_documentation_snippet_with_undeclared_regions_is_refused_as_ansible_does() {
    let path = fixture("docs_usa_undefined.ini");
    let error = Inventory::load(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:16: [usa:children] names group \"northeast\", which no [northeast] or [northeast:children] section declares",
            path.display()
        )
    );
}

#[test]
fn group_vars_and_host_vars_follow_ansible_precedence_in_both_formats() {
    for file in ["site/hosts.ini", "site/hosts.yml"] {
        let inventory = Inventory::load(fixture(file)).unwrap();
        let host1 = inventory.host("host1").unwrap();
        // all (file) < groups (file, shallow to deep) < group_vars/all < group_vars of the
        // groups (shallow to deep) < host (file) < host_vars: Ansible's VARIABLE_PRECEDENCE.
        assert_eq!(
            serde_json::Value::Object(host1.vars().clone()),
            json!({
                // group_vars/all beats the inventory file's [southeast:vars].
                "ntp": "all-dir",
                "motd": "all-dir",
                "tier": "all-dir",
                // Ansible's quirk: a parent's group_vars file beats a child's inventory variable.
                "level": "southeast-dir",
                "region": "southeast-dir",
                "city": "ATL",
                "ansible_port": 2201,
                "ansible_user": "ops",
            }),
            "{file}"
        );
        assert_eq!((host1.port(), host1.user()), (Some(2201), Some("ops")));

        // Two groups at the same depth: the later name wins (raleigh after atlanta).
        let host2 = inventory.host("host2").unwrap();
        assert_eq!(
            host2.var::<String>("city").unwrap().as_deref(),
            Some("Raleigh"),
            "{file}"
        );
        assert_eq!(
            host2.var::<String>("ntp").unwrap().as_deref(),
            Some("host2-inline"),
            "{file}"
        );
        assert_eq!(
            host2.var::<String>("level").unwrap().as_deref(),
            Some("southeast-dir")
        );

        let host3 = inventory.host("host3").unwrap();
        assert_eq!(
            host3.var::<String>("ntp").unwrap().as_deref(),
            Some("host3-dir"),
            "{file}"
        );
        assert_eq!(host3.address(), "10.0.0.3");
        assert_eq!(host3.port(), None);

        let atlanta = inventory.group("atlanta").unwrap();
        assert_eq!(
            serde_json::Value::Object(atlanta.vars().clone()),
            json!({"level": "atlanta-ini", "city": "ATL", "ansible_port": 2201})
        );
    }
}

#[test]
fn in_memory_inventories_read_no_vars_directories() {
    let text = std::fs::read_to_string(fixture("site/hosts.ini")).unwrap();
    let inventory = Inventory::from_ini(&text, "site/hosts.ini").unwrap();
    let host1 = inventory.host("host1").unwrap();
    assert_eq!(
        host1.var::<String>("level").unwrap().as_deref(),
        Some("atlanta-ini")
    );
    assert_eq!(host1.var::<String>("city").unwrap(), None);
}

#[test]
fn ini_values_are_read_as_ansible_reads_them() {
    let inventory = Inventory::from_ini(
        "web1 port=80 ratio=0.5 on=True off=False none=None text=FALSE ip=10.0.0.1 padded=01 \
         quoted=\"'80'\" spaced=\"a b\" list=\"[1, 'x']\" map=\"{'k': 2}\" # a comment\n\
         [all:vars]\n\
         group_port = 8080\n\
         group_flag=yes\n\
         group_text='quoted # not a comment'\n",
        "values.ini",
    )
    .unwrap();
    let vars = serde_json::Value::Object(inventory.host("web1").unwrap().vars().clone());
    assert_eq!(
        vars,
        json!({
            "port": 80, "ratio": 0.5, "on": true, "off": false, "none": null, "text": "FALSE",
            "ip": "10.0.0.1", "padded": "01", "quoted": "80", "spaced": "a b", "list": [1, "x"],
            "map": {"k": 2}, "group_port": 8080, "group_flag": "yes",
            "group_text": "quoted # not a comment",
        })
    );
}

#[test]
fn yaml_values_keep_their_yaml_types() {
    let inventory = Inventory::from_yaml(
        "all:\n  hosts:\n    web1:\n      port: 80\n      flag: yes\n      list: [1, two]\n      map: {k: v}\n      empty:\n",
        "values.yml",
    )
    .unwrap();
    let vars = serde_json::Value::Object(inventory.host("web1").unwrap().vars().clone());
    assert_eq!(
        vars,
        json!({"port": 80, "flag": true, "list": [1, "two"], "map": {"k": "v"}, "empty": null})
    );
}

#[test]
fn typed_access_through_serde() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct Web {
        http_port: u16,
        #[serde(default)]
        tags: Vec<String>,
        ansible_user: String,
    }
    let inventory = Inventory::from_ini(
        "[web]\nweb1 http_port=8080 tags=\"['blue', 'canary']\"\n[web:vars]\nansible_user=deploy\n",
        "typed.ini",
    )
    .unwrap();
    let web1 = inventory.host("web1").unwrap();
    assert_eq!(
        web1.vars_as::<Web>().unwrap(),
        Web {
            http_port: 8080,
            tags: vec!["blue".into(), "canary".into()],
            ansible_user: "deploy".into()
        }
    );
    assert_eq!(
        web1.var::<Vec<String>>("tags").unwrap().unwrap(),
        ["blue", "canary"]
    );
    assert_eq!(web1.var::<u16>("missing").unwrap(), None);

    let error = web1.var::<bool>("http_port").unwrap_err();
    assert!(matches!(error, InventoryError::VarType { .. }));
    assert_eq!(
        error.to_string(),
        "host web1: variable \"http_port\" does not fit the type asked for"
    );
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("expected a boolean")
    );
    let error = inventory
        .host("web1")
        .unwrap()
        .vars_as::<Vec<u8>>()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "host web1: its variables do not fit the type asked for"
    );
}

#[test]
fn host_patterns_select_as_ansible() {
    let inventory = Inventory::load(fixture("docs_groups.ini")).unwrap();
    let all = names(inventory.hosts());
    assert_eq!(select(&inventory, "all"), all);
    assert_eq!(select(&inventory, "*"), all);
    assert_eq!(
        select(&inventory, "webservers"),
        ["foo.example.com", "bar.example.com"]
    );
    assert_eq!(select(&inventory, "two.example.com"), ["two.example.com"]);
    // Unions, with either separator; results in inventory order, each host once.
    let both = [
        "foo.example.com",
        "bar.example.com",
        "one.example.com",
        "two.example.com",
        "three.example.com",
    ];
    assert_eq!(select(&inventory, "dbservers:webservers"), both);
    assert_eq!(select(&inventory, "dbservers,webservers"), both);
    assert_eq!(
        select(&inventory, "prod:east:foo.example.com"),
        ["foo.example.com", "one.example.com", "two.example.com"]
    );
    // Intersections and exclusions apply after every union, whatever their place.
    assert_eq!(select(&inventory, "webservers:&east"), ["foo.example.com"]);
    assert_eq!(select(&inventory, "&east:webservers"), ["foo.example.com"]);
    assert_eq!(
        select(&inventory, "!west:webservers:dbservers"),
        ["foo.example.com", "one.example.com", "two.example.com"]
    );
    assert_eq!(
        select(&inventory, "all:!prod:!mail.example.com"),
        ["bar.example.com", "three.example.com"]
    );
    assert_eq!(select(&inventory, "!ungrouped"), &all[1..]);
    // Globs over host and group names.
    assert_eq!(
        select(&inventory, "t*.example.com"),
        ["two.example.com", "three.example.com"]
    );
    assert_eq!(
        select(&inventory, "web*"),
        ["foo.example.com", "bar.example.com"]
    );
    assert_eq!(
        select(&inventory, "[ot]?[eo].example.com"),
        ["one.example.com", "two.example.com"]
    );
    // Subscripts of a group.
    assert_eq!(select(&inventory, "dbservers[0]"), ["one.example.com"]);
    assert_eq!(select(&inventory, "dbservers[-1]"), ["three.example.com"]);
    assert_eq!(
        select(&inventory, "dbservers[1:2]:webservers[0]"),
        ["foo.example.com", "two.example.com", "three.example.com"]
    );
    assert_eq!(
        select(&inventory, "dbservers[1:]"),
        ["two.example.com", "three.example.com"]
    );
    // A known group without hosts selects nothing, without error.
    let empty = Inventory::from_ini("[empty]\n[web]\nweb1\n", "x.ini").unwrap();
    assert!(empty.select("empty").unwrap().is_empty());
}

#[test]
fn host_patterns_that_name_nothing_are_errors() {
    let inventory = Inventory::load(fixture("docs_groups.ini")).unwrap();
    let error = |pattern: &str| inventory.select(pattern).unwrap_err().to_string();
    assert_eq!(
        error("webservers:nosuch"),
        "host pattern \"webservers:nosuch\": no host or group is named \"nosuch\""
    );
    assert_eq!(
        error("all:!web-3"),
        "host pattern \"all:!web-3\": no host or group is named \"web-3\""
    );
    assert_eq!(
        error("xyz*"),
        "host pattern \"xyz*\": no host or group matches \"xyz*\""
    );
    assert_eq!(
        error("~web[0-9]+"),
        "host pattern \"~web[0-9]+\": regex terms such as \"~web[0-9]+\" are not supported; use globs (web*)"
    );
    assert_eq!(
        error(""),
        "host pattern \"\": an empty pattern selects nothing; `all` selects every host"
    );
    assert_eq!(
        error("dbservers[7]"),
        "host pattern \"dbservers[7]\": \"dbservers[7]\": group \"dbservers\" has 3 hosts, none at 7"
    );
    assert!(matches!(
        inventory.select("nosuch"),
        Err(InventoryError::Pattern { .. })
    ));
}

/// Each malformed INI inventory, with the exact error: file, line, what is wrong.
#[test]
fn malformed_ini_inventories_say_where_and_what() {
    let cases: &[(&str, &str)] = &[
        (
            "[web servers]\nweb1\n",
            "inventory.ini:1: a section header is [group], [group:children] or [group:vars], with no spaces or other brackets in the group name: \"[web servers]\"",
        ),
        (
            "[web] trailing\n",
            "inventory.ini:1: a section header is [group], [group:children] or [group:vars], with no spaces or other brackets in the group name: \"[web] trailing\"",
        ),
        (
            "[web]\nweb1\n[web:foo]\nx=1\n",
            "inventory.ini:3: unknown section kind \"foo\" in [web:foo]: a section is [web], [web:children] or [web:vars]",
        ),
        (
            "[web]\nweb1 http_port\n",
            "inventory.ini:2: expected key=value after the host name, got \"http_port\"",
        ),
        (
            "[web]\nweb1 =80\n",
            "inventory.ini:2: a variable needs a name before '=': \"=80\"",
        ),
        (
            "[web]\nweb1\n[web:vars]\nntp\n",
            "inventory.ini:4: expected key=value in [web:vars], got \"ntp\"",
        ),
        (
            "[web:children]\nweb db\n[web2]\n",
            "inventory.ini:2: expected a group name in [web:children], got \"web db\"",
        ),
        (
            "[web]\nweb1 motd='unclosed\n",
            "inventory.ini:2: cannot split the host line: a quotation is not closed: \"web1 motd='unclosed\"",
        ),
        (
            "# ranges\n\n[web]\nweb1\n\n[db]\nweb[01]\n",
            "inventory.ini:7: a host range needs a start and an end, as in web[01:20]: \"web[01]\"",
        ),
        (
            "[web]\nweb[]\n",
            "inventory.ini:2: a host range needs a start and an end, as in web[01:20]: \"web[]\"",
        ),
        (
            "[web]\nweb[3:]\n",
            "inventory.ini:2: a host range needs a start and an end, as in web[01:20]: \"web[3:]\"",
        ),
        (
            "[web]\nweb[5:1]\n",
            "inventory.ini:2: a host range must not run backwards (5 is after 1): \"web[5:1]\"",
        ),
        (
            "[web]\nweb[f:a]\n",
            "inventory.ini:2: a host range must not run backwards (f is after a): \"web[f:a]\"",
        ),
        (
            "[web]\nweb[01:100]\n",
            "inventory.ini:2: a zero-padded host range needs a start and an end of the same width, as in [01:20], not [01:100]: \"web[01:100]\"",
        ),
        (
            "[web]\nweb[1:b]\n",
            "inventory.ini:2: a host range runs over numbers or over single letters, as in web[01:20] or db-[a:f]: \"web[1:b]\"",
        ),
        (
            "[web]\nweb[1:9:0]\n",
            "inventory.ini:2: a host range's step must be a whole number above 0, not \"0\": \"web[1:9:0]\"",
        ),
        (
            "[web]\nweb[1:9\n",
            "inventory.ini:2: a '[' without its ']' in a host name: \"web[1:9\"",
        ),
        (
            "[web]\nweb[0:9999999]\n",
            "inventory.ini:2: a host range may make at most 100000 hosts: \"web[0:9999999]\"",
        ),
        (
            "[web]\nweb1:\n",
            "inventory.ini:2: a host cannot end in ':', which is there to give a port, as in web1:2222: \"web1:\"",
        ),
        (
            "[web]\nweb1:ssh\n",
            "inventory.ini:2: \"ssh\" is not a port number (1 to 65535): \"web1:ssh\"",
        ),
        (
            "[web]\nweb1 ansible_port=http\n",
            "inventory.ini:2: ansible_port must be a port number (1 to 65535), not \"http\"",
        ),
        (
            "[web]\nweb1\n[web:vars]\nansible_ssh_port=70000\n",
            "inventory.ini:4: ansible_ssh_port must be a port number (1 to 65535), not 70000",
        ),
        (
            "[web]\nweb1 ansible_host=\"[1]\"\n",
            "inventory.ini:2: ansible_host must be a non-empty string, not [1]",
        ),
        (
            "[a:children]\nb\n[b:children]\nc\n[c:children]\na\n",
            "inventory.ini:6: group \"a\" would contain itself: a → b → c → a",
        ),
        (
            "[a:children]\na\n",
            "inventory.ini:2: group \"a\" would contain itself: a → a",
        ),
        (
            "[a:children]\nall\n",
            "inventory.ini:2: the group all cannot be a child of \"a\": it contains every group",
        ),
        (
            "[usa:children]\nsoutheast\n",
            "inventory.ini:2: [usa:children] names group \"southeast\", which no [southeast] or [southeast:children] section declares",
        ),
        (
            "[web]\nweb1\n[db:vars]\nx=1\n",
            "inventory.ini:3: [db:vars] is for group \"db\", which no [db] or [db:children] section declares",
        ),
        (
            "[web]\n---\n",
            "inventory.ini:2: \"---\" is not a host name; '---' is a sign that this file is YAML",
        ),
    ];
    for (text, expected) in cases {
        let error = Inventory::from_ini(text, "inventory.ini").unwrap_err();
        assert!(
            matches!(error, InventoryError::Malformed { .. }),
            "{text:?}"
        );
        assert_eq!(&error.to_string(), expected, "{text:?}");
    }
}

/// Each malformed YAML inventory, with the exact error: file, line, what is wrong.
#[test]
fn malformed_yaml_inventories_say_where_and_what() {
    let cases: &[(&str, &str)] = &[
        (
            "- web1\n- web2\n",
            "inventory.yml:1: an inventory is a mapping of group names to groups (as in `all: {hosts: …}`), not a list",
        ),
        (
            "all:\n  children:\n    web:\n      hosts:\n        - web1\n        - web2\n",
            "inventory.yml:5: the hosts of group \"web\" must be a mapping of host names, each with its variables or nothing, not a list",
        ),
        (
            "web:\n  hosts: web1\n",
            "inventory.yml:2: the hosts of group \"web\" must be a mapping of host names, each with its variables or nothing, not a string",
        ),
        (
            "web: hello\n",
            "inventory.yml:1: group \"web\" must be a mapping with hosts, children or vars (or nothing), not a string",
        ),
        (
            "web:\n  hosts:\n    web1:\n  vars:\n    - ntp\n",
            "inventory.yml:5: the vars of group \"web\" must be a mapping of variable names and values, not a list",
        ),
        (
            "web:\n  children:\n    - db\n",
            "inventory.yml:3: the children of group \"web\" must be a mapping of group names, each with its group or nothing, not a list",
        ),
        (
            "web:\n  hosts:\n    web1: 80\n",
            "inventory.yml:3: the variables of host \"web1\" must be a mapping (or nothing), not a number",
        ),
        (
            "web:\n  hosts:\n    web1:\n      ansible_port: 0\n",
            "inventory.yml:4: ansible_port must be a port number (1 to 65535), not 0",
        ),
        (
            "web:\n  hosts:\n    web[01]:\n",
            "inventory.yml:3: a host range needs a start and an end, as in web[01:20]: \"web[01]\"",
        ),
        (
            "a:\n  children:\n    b:\n      children:\n        a:\n",
            "inventory.yml:5: group \"a\" would contain itself: a → b → a",
        ),
        (
            "web:\n  hosts:\n    web1:\n      x: [1, 2\n",
            "inventory.yml:4: YAML: unclosed bracket '['",
        ),
        (
            "web:\n  hosts:\n    web1:\n  bad: [\n\tx: 1\n",
            "inventory.yml:5: YAML: tabs disallowed within this context (block indentation)",
        ),
    ];
    for (text, expected) in cases {
        let error = Inventory::from_yaml(text, "inventory.yml").unwrap_err();
        assert!(
            matches!(error, InventoryError::Malformed { .. }),
            "{text:?}"
        );
        assert_eq!(&error.to_string(), expected, "{text:?}");
    }
}

#[test]
fn unknown_group_keys_in_yaml_are_skipped_as_ansible_skips_them() {
    let inventory =
        Inventory::from_yaml("web:\n  host:\n    web1:\n  hosts:\n    web2:\n", "x.yml").unwrap();
    assert_eq!(names(inventory.hosts()), ["web2"]);
}

#[test]
fn malformed_variable_files_and_unreadable_inventories_name_their_file() {
    let dir = std::env::temp_dir().join(format!("coercion-inventory-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("group_vars")).unwrap();
    std::fs::write(dir.join("hosts"), "[web]\nweb1\n").unwrap();
    std::fs::write(dir.join("group_vars/web.yml"), "# web\n- not\n- a map\n").unwrap();
    let error = Inventory::load(dir.join("hosts")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2: a variable file is a mapping of variable names to values, not a list",
            dir.join("group_vars/web.yml").display()
        )
    );
    std::fs::write(dir.join("group_vars/web.yml"), "ansible_port: [22]\n").unwrap();
    let error = Inventory::load(dir.join("hosts")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:1: ansible_port must be a port number (1 to 65535), not [22]",
            dir.join("group_vars/web.yml").display()
        )
    );
    // A file without extension that holds YAML is read as YAML.
    std::fs::write(dir.join("group_vars/web.yml"), "ntp: x\n").unwrap();
    std::fs::write(
        dir.join("hosts"),
        "# yaml after all\nweb:\n  hosts:\n    web1:\n",
    )
    .unwrap();
    let inventory = Inventory::load(dir.join("hosts")).unwrap();
    assert_eq!(
        inventory
            .host("web1")
            .unwrap()
            .var::<String>("ntp")
            .unwrap()
            .as_deref(),
        Some("x")
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let error = Inventory::load(fixture("no-such-inventory.ini")).unwrap_err();
    assert!(matches!(error, InventoryError::Read { .. }));
    assert!(error.to_string().starts_with("cannot read "));
}

#[test]
fn json_files_crlf_and_byte_order_marks_are_read() {
    let dir = std::env::temp_dir().join(format!("coercion-inventory-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.json"),
        r#"{"web": {"hosts": {"web1": {"ansible_port": 2222}}, "vars": {"ntp": "x"}}}"#,
    )
    .unwrap();
    let inventory = Inventory::load(dir.join("hosts.json")).unwrap();
    assert_eq!(inventory.host("web1").unwrap().port(), Some(2222));
    std::fs::remove_dir_all(&dir).unwrap();

    let inventory = Inventory::from_ini(
        "\u{feff}[web]\r\nweb1 a=1\r\n[web:vars]\r\nb=2\r\n",
        "crlf.ini",
    )
    .unwrap();
    assert_eq!(
        serde_json::Value::Object(inventory.host("web1").unwrap().vars().clone()),
        json!({"a": 1, "b": 2})
    );
}

#[test]
fn of_duplicate_yaml_keys_the_last_wins_as_in_ansible() {
    let inventory = Inventory::from_yaml(
        "web:\n  hosts:\n    web1: {a: 1}\n    web1: {a: 2}\n",
        "dup.yml",
    )
    .unwrap();
    assert_eq!(
        inventory.host("web1").unwrap().var::<u8>("a").unwrap(),
        Some(2)
    );
}

#[test]
fn group_priority_orders_groups_of_the_same_depth() {
    let text =
        "[a]\nh1\n[b]\nh1\n[a:vars]\nx=from-a\nansible_group_priority=5\n[b:vars]\nx=from-b\n";
    let inventory = Inventory::from_ini(text, "p.ini").unwrap();
    assert_eq!(
        inventory
            .host("h1")
            .unwrap()
            .var::<String>("x")
            .unwrap()
            .as_deref(),
        Some("from-a")
    );
}

#[test]
fn ipv6_hosts_and_ports() {
    let inventory = Inventory::from_ini(
        "[v6]\n[2001:db8::1]:2222\nfe80::1 ansible_user=root\n",
        "v6.ini",
    )
    .unwrap();
    assert_eq!(names(inventory.hosts()), ["2001:db8::1", "fe80::1"]);
    assert_eq!(inventory.host("2001:db8::1").unwrap().port(), Some(2222));
    assert_eq!(select(&inventory, "fe80::1"), ["fe80::1"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No text makes either parser panic.
    #[test]
    fn no_input_panics(text in "(\\[|\\]|:|=|-|#|'|\"|\\\\|\\{|\\}|,|\\n|  |web|all|hosts|children|vars|[0-9]|[a-z]|\\t|é|…){0,80}") {
        let _ = Inventory::from_ini(&text, "fuzz.ini");
        let _ = Inventory::from_yaml(&text, "fuzz.yml");
        if let Ok(inventory) = Inventory::from_ini(&text, "fuzz.ini") {
            let _ = inventory.select(&text);
        }
    }

    /// Arbitrary strings too, not only inventory-like ones.
    #[test]
    fn no_arbitrary_input_panics(text in any::<String>()) {
        let _ = Inventory::from_ini(&text, "fuzz.ini");
        let _ = Inventory::from_yaml(&text, "fuzz.yml");
    }
}

#[test]
fn deep_yaml_flow_values_do_not_overflow_the_stack() {
    let deep = "[".repeat(100_000);
    let _ = Inventory::from_yaml(&format!("web:\n  vars:\n    x: {deep}\n"), "deep.yml");
}

#[test]
fn deep_ini_values_do_not_overflow_the_stack() {
    let deep = "[".repeat(100_000);
    let _ = Inventory::from_ini(&format!("web1 x={deep}\n"), "deep.ini");
}

#[test]
fn a_host_name_of_many_ranges_is_refused_not_a_stack_overflow() {
    // Each range of one name expands to one value, so no expansion limit would stop it.
    let name = format!("w{}", "[0:0]".repeat(20_000));
    let error = Inventory::from_ini(&format!("[web]\n{name}\n"), "ranges.ini").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("ranges.ini:2: a host name may hold at most 16 ranges: \"w[0:0][0:0]"),
        "{error}"
    );
    // Sixteen are fine.
    let name = format!("w{}", "[0:1]".repeat(16));
    let inventory = Inventory::from_ini(&format!("[web]\n{name}\n"), "ranges.ini").unwrap();
    assert_eq!(inventory.hosts().count(), 1 << 16);
}

#[test]
fn deep_yaml_groups_do_not_overflow_the_stack() {
    let mut nested = String::from("g0:\n");
    for i in 1..2_000 {
        nested.push_str(&format!(
            "{}children:\n{}g{i}:\n",
            "  ".repeat(2 * i - 1),
            "  ".repeat(2 * i)
        ));
    }
    let error = Inventory::from_yaml(&nested, "nested.yml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "nested.yml:33: YAML: nests deeper than 32 levels"
    );
    // 14 levels of child groups, with hosts at the deepest, are read.
    let mut nested = String::from("g0:\n");
    for i in 1..15 {
        nested.push_str(&format!(
            "{}children:\n{}g{i}:\n",
            "  ".repeat(2 * i - 1),
            "  ".repeat(2 * i)
        ));
    }
    nested.push_str(&format!(
        "{}hosts:\n{}h:\n",
        "  ".repeat(31),
        "  ".repeat(32)
    ));
    let inventory = Inventory::from_yaml(&nested, "nested.yml").unwrap();
    assert_eq!(inventory.host("h").unwrap().groups().len(), 16);
}

#[test]
fn long_ini_group_chains_are_read() {
    let chain: String = (0..5_000)
        .map(|i| format!("[g{i}:children]\ng{}\n", i + 1))
        .collect();
    let inventory = Inventory::from_ini(&format!("{chain}[g5000]\nh\n"), "chain.ini").unwrap();
    assert_eq!(inventory.host("h").unwrap().groups().len(), 5_002);
}
