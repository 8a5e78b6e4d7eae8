//! The rendered ruleset against a real kernel: what `kproxy debug render` prints for the
//! shipped examples loads as it is, and a ClusterIP refuses the ports it does not serve.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kproxy_e2e::{ClientError, Endpoint, EndpointSlice, Lab, Protocol, Service, ServicePort, root_or_skip};

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples").display().to_string()
}

#[test]
fn rendered_examples_should_load_into_a_real_kernel_in_both_formats() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    for format in ["nft", "listing"] {
        let script = lab
            .kproxy(&[
                "debug",
                "render",
                "--manifests",
                &examples(),
                "--hostname-override",
                "node-a",
                "--format",
                format,
            ])
            .expect_success();
        lab.nft_script(&script).expect_success();
        let listed = lab.nft(&["list", "table", "ip", "kproxy"]).expect_success();
        for expected in
            ["10.96.0.10 . tcp . 80 comment \"shop/web:http\" : goto pick-tcp-3", "10.244.2.13 . 8080"]
        {
            assert!(listed.contains(expected), "{format}: {expected:?} missing from\n{listed}");
        }
        let listed6 = lab.nft(&["list", "table", "ip6", "kproxy"]).expect_success();
        assert!(listed6.contains("fd00:10:244:1::51 . 8080"), "{format}: {listed6}");
        lab.kproxy(&["cleanup"]).expect_success();
    }
}

#[test]
fn cluster_ip_should_refuse_a_port_it_does_not_serve() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let web = lab.add_pod("web1");
    web.serve_tcp(8080);
    web.serve_tcp(8081);
    web.serve_udp(8081);
    let service =
        Service::cluster_ip("default", "web", "10.96.0.70").port(ServicePort::tcp("http", 80, 8080));
    let slice = EndpointSlice::for_service(&service).endpoint(Endpoint::ready(web.ip()));
    lab.manifests().write("web.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&web]);

    let other_port: SocketAddr = "10.96.0.70:81".parse().unwrap();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let outcome = lab.request(client.netns(), protocol, other_port, Duration::from_secs(2));
        assert!(matches!(outcome, Err(ClientError::Refused)), "{protocol:?} to {other_port}: {outcome:?}");
    }
}

#[test]
fn cleanup_with_kube_proxy_should_remove_kube_proxys_tables_and_leave_the_rest() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    lab.nft_script(
        "add table ip kube-proxy\nadd chain ip kube-proxy services\n\
         add table ip6 kube-proxy\n\
         add table inet foreign\nadd chain inet foreign input { type filter hook input priority 0; policy accept; }\n",
    )
    .expect_success();
    let foreign = lab.nft(&["list", "table", "inet", "foreign"]).expect_success();
    lab.kproxy(&["cleanup"]).expect_success();
    assert!(
        lab.nft(&["list", "table", "ip", "kube-proxy"]).success(),
        "plain cleanup keeps kube-proxy's tables"
    );
    lab.kproxy(&["cleanup", "--kube-proxy"]).expect_success();
    let tables = lab.nft(&["list", "tables"]).expect_success();
    assert!(!tables.contains("kube-proxy"), "{tables}");
    assert_eq!(lab.nft(&["list", "table", "inet", "foreign"]).expect_success(), foreign);
}
