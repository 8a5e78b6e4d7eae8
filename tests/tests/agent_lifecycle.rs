//! The agent's life: rules survive a crash and a clean exit, a restart is invisible to traffic,
//! and neither a run nor `kproxy cleanup` touches anybody else's table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kproxy_e2e::netns::spawn_in;
use kproxy_e2e::{
    ClientError, Endpoint, EndpointSlice, Lab, Pod, Protocol, Service, ServicePort, Tally, client,
    root_or_skip,
};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP Service `web` at `cluster_ip`:80 → 8080.
fn web(cluster_ip: &str) -> Service {
    Service::cluster_ip("default", "web", cluster_ip).port(ServicePort::tcp("http", 80, 8080))
}

/// Writes `web.yaml`: `service` with `endpoints` ready.
fn write_service(lab: &Lab, service: Service, endpoints: &[Pod]) -> Service {
    let slice =
        EndpointSlice::for_service(&service).endpoints(endpoints.iter().map(|pod| Endpoint::ready(pod.ip())));
    lab.manifests().write("web.yaml", &[&service, &slice]);
    service
}

/// Writes `web.yaml`: the Service [`web`] at `cluster_ip` with `endpoints` ready.
fn write_web(lab: &Lab, cluster_ip: &str, endpoints: &[Pod]) -> Service {
    write_service(lab, web(cluster_ip), endpoints)
}

/// A lab with a client pod and two pods serving TCP 8080; `None` when not root.
fn client_and_two_servers() -> Option<(Lab, Pod, Vec<Pod>)> {
    if !root_or_skip() {
        return None;
    }
    let lab = Lab::new();
    let client_pod = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2"]);
    for pod in &endpoints {
        pod.serve_tcp(8080);
    }
    Some((lab, client_pod, endpoints))
}

#[test]
fn agent_killed_and_restarted_should_not_fail_a_single_connection() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client_pod = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2", "pod3", "pod4"]);
    for pod in &endpoints {
        pod.serve_tcp(8080);
    }
    let service = write_web(&lab, "10.96.0.70", &endpoints[..3]);
    let address = service.address("http");
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, &endpoints[..3]);

    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let client_loop = {
        let (stop, made) = (Arc::clone(&stop), Arc::clone(&made));
        spawn_in(client_pod.netns(), move || {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let outcome = client::tcp_request(address, TIMEOUT);
                if let Err(error) = &outcome {
                    eprintln!("connection {} failed: {error}", tally.total() + 1);
                }
                tally.record(&outcome);
                made.fetch_add(1, Ordering::Relaxed);
            }
            tally
        })
    };
    let wait_for_connections = |what: &str, at_least: usize| {
        lab.eventually(&format!("{what} ({at_least} connections made)"), || {
            let count = made.load(Ordering::Relaxed);
            if count >= at_least { Ok(count) } else { Err(format!("{count} connections so far")) }
        })
    };

    let before_kill = wait_for_connections("client loop running", 50);
    let table = table_handle(&lab);
    agent.kill();
    assert!(!agent.is_running());
    let before_restart = wait_for_connections("connections with no agent", before_kill + 100);
    agent.start();
    // Prove the new agent has synced: a change only it can have made becomes visible.
    write_web(&lab, "10.96.0.70", &endpoints);
    let took = lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, &endpoints);
    let after_sync = made.load(Ordering::Relaxed);
    eprintln!(
        "the restarted agent programmed a new endpoint after {took:?}; \
         {} connections while it started and synced",
        after_sync - before_restart
    );
    wait_for_connections("connections after the resync", (after_sync + 100).max(200));
    assert_eq!(table_handle(&lab), table, "the restarted agent rewrites its table in place");

    stop.store(true, Ordering::Relaxed);
    let tally = client_loop.join().expect("the client loop panicked");
    eprintln!("client loop across kill and restart: {tally}");
    assert!(tally.total() >= 200, "{tally}");
    assert_eq!(tally.failures(), 0, "no connection may fail across an agent restart: {tally}");
}

/// The kernel's handle of kproxy's IPv4 table: a table deleted and created again gets a new one.
fn table_handle(lab: &Lab) -> String {
    let listing = lab.nft(&["-a", "list", "table", "ip", "kproxy"]).expect_success();
    let first = listing.lines().next().unwrap_or_default();
    first.split("# handle ").nth(1).unwrap_or_else(|| panic!("no handle in {first:?}")).trim().to_string()
}

const FOREIGN_TABLE: &str = "\
table inet foreign {
	map port_verdicts {
		type inet_service : verdict
		elements = { 22 : accept, 2222 : drop }
	}

	chain input {
		type filter hook input priority filter + 10; policy accept;
		tcp dport vmap @port_verdicts
	}

	chain forward {
		type filter hook forward priority filter + 10; policy accept;
		ip saddr 203.0.113.0/24 jump audit
	}

	chain audit {
		ip daddr 198.51.100.7 drop
	}
}
";

#[test]
fn foreign_table_should_stay_byte_identical_through_run_resync_sigterm_and_cleanup() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client_pod = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &endpoints {
        pod.serve_tcp(8080);
    }
    let foreign = || lab.nft(&["list", "table", "inet", "foreign"]).expect_success();
    lab.nft_script(FOREIGN_TABLE).expect_success();
    let original = foreign();
    eprintln!("foreign table:\n{original}");

    let service = write_web(&lab, "10.96.0.80", &endpoints[..2]);
    let address = service.address("http");
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, &endpoints[..2]);
    lab.nft(&["list", "table", "ip", "kproxy"]).expect_success();
    assert_eq!(foreign(), original, "after the first sync");

    write_web(&lab, "10.96.0.80", &endpoints);
    lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, &endpoints);
    assert_eq!(foreign(), original, "after a resync");

    agent.terminate();
    assert_eq!(foreign(), original, "after SIGTERM");

    let cleanup = lab.kproxy(&["cleanup"]);
    assert!(cleanup.success(), "kproxy cleanup: {cleanup}");
    assert_eq!(foreign(), original, "after kproxy cleanup");
    for family in ["ip", "ip6"] {
        let listing = lab.nft(&["list", "table", family, "kproxy"]);
        assert!(!listing.success(), "{family} kproxy should be gone after cleanup: {listing}");
    }
    // With our rules gone, the ClusterIP is just an unrouted address again: dropped at the gateway.
    let outcome = lab.tcp_request(client_pod.netns(), address, Duration::from_millis(300));
    assert!(matches!(outcome, Err(ClientError::Timeout)), "after cleanup: {outcome:?}");
}

#[test]
fn rules_should_keep_serving_traffic_after_the_agent_exits_on_sigterm() {
    let Some((lab, client_pod, endpoints)) = client_and_two_servers() else { return };
    let service = write_web(&lab, "10.96.0.90", &endpoints);
    let address = service.address("http");
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, &endpoints);

    agent.terminate();
    assert!(!agent.is_running());
    lab.nft(&["list", "table", "ip", "kproxy"]).expect_success();
    let tally = lab.tally(client_pod.netns(), Protocol::Tcp, address, 60, TIMEOUT);
    eprintln!("with no agent running: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    for pod in &endpoints {
        assert!(tally.count(pod.name()) > 0, "{} never answered: {tally}", pod.name());
    }
}

#[test]
fn agent_restarted_with_a_new_affinity_timeout_should_rewrite_its_table_in_place() {
    let Some((lab, client_pod, endpoints)) = client_and_two_servers() else { return };
    let write = |timeout: u32| {
        write_service(&lab, web("10.96.0.91").client_ip_affinity(Some(timeout)), &endpoints).address("http")
    };
    let address = write(30);
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answer(client_pod.netns(), Protocol::Tcp, address);
    let table = table_handle(&lab);
    agent.kill();

    write(600);
    agent.start();
    let affinity_timeouts = || {
        let listing = lab.nft(&["list", "table", "ip", "kproxy"]).expect_success();
        listing.lines().filter(|l| l.contains("timeout")).map(str::trim).collect::<Vec<_>>().join("; ")
    };
    lab.eventually("the affinity sets declared with timeout 600s", || {
        let timeouts = affinity_timeouts();
        if timeouts.contains("timeout 10m") && !timeouts.contains("30s") { Ok(()) } else { Err(timeouts) }
    });
    assert_eq!(table_handle(&lab), table, "the sets were declared again inside the same table");
    assert!(!agent.log().contains("replacing them"), "the rewrite was not refused:\n{}", agent.log());
    lab.wait_for_answer(client_pod.netns(), Protocol::Tcp, address);
}
