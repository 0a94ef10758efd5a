//! Every check type run against real servers on loopback: passing and failing assertions,
//! journeys, timeouts, and the failure reasons they report.

mod common;

use common::*;
use outpost_synthetic::run;
use std::time::Duration;

fn metric(o: &outpost_synthetic::Outcome, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    o.metrics
        .iter()
        .find(|(n, l, _)| {
            n == name
                && match label {
                    None => l.is_empty(),
                    Some((k, v)) => l.iter().any(|(a, b)| a == k && b == v),
                }
        })
        .map(|(_, _, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_pass_fail_and_report_blackbox_metrics() {
    let a = http_server().await;
    let ok = run(&check(&format!(
        "{{name: ok, type: http, frequency: 10s, url: 'http://{a}/ok'}}"
    )))
    .await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.reason, None);
    assert_eq!(metric(&ok, "probe_http_status_code", None), Some(200.0));
    assert_eq!(metric(&ok, "probe_http_content_length", None), Some(2.0));
    assert_eq!(
        metric(&ok, "probe_http_uncompressed_body_length", None),
        Some(2.0)
    );
    assert_eq!(metric(&ok, "probe_http_ssl", None), Some(0.0));
    assert_eq!(metric(&ok, "probe_http_version", None), Some(1.1));
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        assert!(
            metric(&ok, "probe_http_duration_seconds", Some(("phase", phase))).is_some(),
            "{phase}"
        );
    }
    assert!(
        metric(
            &ok,
            "probe_http_duration_seconds",
            Some(("phase", "connect"))
        )
        .unwrap()
            > 0.0
    );

    let fail = run(&check(&format!(
        "{{name: f, type: http, frequency: 10s, url: 'http://{a}/fail'}}"
    )))
    .await;
    assert!(!fail.success);
    assert_eq!(fail.reason.as_deref(), Some("status 500 is not 2xx"));
    assert_eq!(metric(&fail, "probe_http_status_code", None), Some(500.0));

    // The accepted status can be changed, e.g. to expect the error.
    let want500 = run(&check(&format!(
        "{{name: f, type: http, frequency: 10s, url: 'http://{a}/fail', assert: {{status: [500]}}}}"
    )))
    .await;
    assert!(want500.success, "{want500:?}");

    // Redirects: followed (2 hops) by default, not when told so.
    let r = run(&check(&format!(
        "{{name: r, type: http, frequency: 10s, url: 'http://{a}/redirect'}}"
    )))
    .await;
    assert!(r.success, "{r:?}");
    assert_eq!(metric(&r, "probe_http_redirects", None), Some(2.0));
    let nr = run(&check(&format!(
        "{{name: r, type: http, frequency: 10s, url: 'http://{a}/redirect', follow_redirects: false}}"
    )))
    .await;
    assert_eq!(nr.reason.as_deref(), Some("status 302 is not 2xx"));

    // Body, header and JSON assertions against a real response.
    let body = |extra: &str| {
        check(&format!(
            "{{name: j, type: http, frequency: 10s, url: 'http://{a}/json', assert: {{{extra}}}}}"
        ))
    };
    let good = run(&body(
        "headers: [{name: Content-Type, regex: json}], body_contains: items, body_regex: '\"id\":7', \
         json: [{path: '$.items[0].id', equals: 7}, {path: '$.status', equals: ok}], max_duration: 5s",
    ))
    .await;
    assert!(good.success, "{good:?}");
    assert_eq!(metric(&good, "probe_failed_due_to_regex", None), Some(0.0));
    let bad_re = run(&body("body_regex: '\"id\":8'")).await;
    assert_eq!(
        bad_re.reason.as_deref(),
        Some("body does not match regex `\"id\":8`")
    );
    assert_eq!(
        metric(&bad_re, "probe_failed_due_to_regex", None),
        Some(1.0)
    );
    let bad_json = run(&body("json: [{path: '$.status', equals: down}]")).await;
    assert_eq!(
        bad_json.reason.as_deref(),
        Some("json $.status is \"ok\", expected \"down\"")
    );
    let bad_hdr = run(&body("headers: [{name: x-missing, regex: .}]")).await;
    assert_eq!(
        bad_hdr.reason.as_deref(),
        Some("header x-missing is missing")
    );

    // A refused connection names the phase and the error.
    let c = closed_port();
    let refused = run(&check(&format!(
        "{{name: c, type: http, frequency: 10s, url: 'http://{c}/'}}"
    )))
    .await;
    assert_eq!(
        refused.reason.as_deref(),
        Some("connect: connection refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_stop_at_their_timeout() {
    let a = http_server().await;
    let d = check(&format!(
        "{{name: slow, type: http, frequency: 10s, timeout: 500ms, url: 'http://{a}/slow'}}"
    ));
    let t0 = std::time::Instant::now();
    let o = run(&d).await;
    assert!(!o.success);
    assert_eq!(o.reason.as_deref(), Some("timed out after 500ms"));
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        t0.elapsed()
    );
    assert!(o.duration >= Duration::from_millis(500));
    assert_eq!(d.timeout(), Duration::from_millis(500));

    // In a journey the step that ran out of time is the failing one.
    let j = check(&format!(
        "{{name: j, type: http, frequency: 10s, timeout: 500ms, steps: [{{url: 'http://{a}/ok'}}, {{name: wait, url: 'http://{a}/slow'}}]}}"
    ));
    let o = run(&j).await;
    assert_eq!(o.failed_step.as_deref(), Some("wait"));
    assert_eq!(o.reason.as_deref(), Some("timed out after 500ms"));
    assert_eq!(
        o.steps.iter().map(|s| s.success).collect::<Vec<_>>(),
        vec![true, false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_checks_verify_against_the_ca_file_and_report_expiry() {
    let (a, ca) = https_server().await;
    let port = a.port();
    let ca = ca.display();
    let ok = run(&check(&format!(
        "{{name: s, type: http, frequency: 10s, url: 'https://localhost:{port}/ok', tls: {{ca_file: '{ca}'}}}}"
    )))
    .await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(metric(&ok, "probe_http_ssl", None), Some(1.0));
    let exp = metric(&ok, "probe_ssl_earliest_cert_expiry", None).expect("expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        exp > now + 300.0 * 86400.0,
        "the test certificate lasts 825 days: {exp}"
    );
    assert!(metric(&ok, "probe_http_duration_seconds", Some(("phase", "tls"))).unwrap() > 0.0);

    // Not trusted by the system roots: the handshake fails and says so.
    let untrusted = run(&check(&format!(
        "{{name: s, type: http, frequency: 10s, url: 'https://localhost:{port}/ok'}}"
    )))
    .await;
    assert!(!untrusted.success);
    let reason = untrusted.reason.unwrap();
    assert!(
        reason.starts_with("tls handshake:") && reason.contains("certificate"),
        "{reason}"
    );

    // ...unless verification is off.
    let insecure = run(&check(&format!(
        "{{name: s, type: http, frequency: 10s, url: 'https://127.0.0.1:{port}/ok', tls: {{insecure_skip_verify: true}}}}"
    )))
    .await;
    assert!(insecure.success, "{insecure:?}");

    // server_name picks the name to verify when the URL has an address.
    let sni = run(&check(&format!(
        "{{name: s, type: http, frequency: 10s, url: 'https://127.0.0.1:{port}/ok', tls: {{ca_file: '{ca}', server_name: localhost}}}}"
    )))
    .await;
    assert!(sni.success, "{sni:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_capture_substitute_and_stop_at_the_failing_step() {
    let a = http_server().await;
    let journey = |last_path: &str| {
        check(&format!(
            r#"
name: api
type: http
frequency: 30s
headers: {{x-client: outpost}}
steps:
  - name: login
    method: POST
    url: http://{a}/login
    body: '{{"user":"ann"}}'
    capture:
      token: {{json: $.token}}
      session: {{header: x-session}}
  - name: list
    url: http://{a}/items/${{token}}
    headers: {{Authorization: 'Bearer ${{token}}'}}
    assert: {{json: [{{path: '$.items[0].id', exists: true}}]}}
    capture:
      item: {{regex: '"id":"([^"]+)"'}}
  - url: http://{a}{last_path}
"#
        ))
    };
    let ok = run(&journey("/ok")).await;
    assert!(ok.success, "{ok:?}");
    let names: Vec<_> = ok
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.success))
        .collect();
    assert_eq!(
        names,
        vec![("login", true), ("list", true), ("step3", true)]
    );

    // The third step uses the captured item and gets a 404: the journey fails there.
    let bad = run(&journey("/items/${item}")).await;
    assert!(!bad.success);
    assert_eq!(bad.failed_step.as_deref(), Some("step3"));
    assert_eq!(bad.reason.as_deref(), Some("status 404 is not 2xx"));
    assert_eq!(bad.steps.len(), 3);
    assert!(!bad.steps[2].success && bad.steps[1].success);

    // A failing first step stops the journey before the others run.
    let mut first = journey("/ok");
    first.steps[0].body = Some(r#"{"user":"bob"}"#.into());
    let f = run(&first).await;
    assert_eq!(f.failed_step.as_deref(), Some("login"));
    assert_eq!(f.reason.as_deref(), Some("status 403 is not 2xx"));
    assert_eq!(f.steps.len(), 1);

    // A capture that finds nothing fails its own step.
    let mut cap = journey("/ok");
    cap.steps[0].capture.get_mut("token").unwrap().json = Some("$.nothing".into());
    let c = run(&cap).await;
    assert_eq!(c.failed_step.as_deref(), Some("login"));
    assert_eq!(
        c.reason.as_deref(),
        Some("capture token: json path $.nothing matched nothing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_connect_send_and_expect() {
    let b = banner_server().await;
    let ok = run(&check(&format!(
        "{{name: t, type: tcp, frequency: 10s, target: '{b}'}}"
    )))
    .await;
    assert!(ok.success, "{ok:?}");
    let banner = run(&check(&format!(
        "{{name: t, type: tcp, frequency: 10s, target: '{b}', expect: '^220 '}}"
    )))
    .await;
    assert!(banner.success, "{banner:?}");
    let echo = run(&check(&format!(
        "{{name: t, type: tcp, frequency: 10s, timeout: 2s, target: '{b}', send: \"hello\\n\", expect: HELLO}}"
    )))
    .await;
    assert!(echo.success, "{echo:?}");
    let wrong = run(&check(&format!(
        "{{name: t, type: tcp, frequency: 10s, timeout: 2s, target: '{b}', send: \"x\\n\", expect: '^SSH-'}}"
    )))
    .await;
    assert!(!wrong.success);
    assert!(
        wrong
            .reason
            .as_deref()
            .unwrap()
            .contains("does not match expect regex `^SSH-`"),
        "{wrong:?}"
    );
    let c = closed_port();
    let refused = run(&check(&format!(
        "{{name: t, type: tcp, frequency: 10s, target: '{c}'}}"
    )))
    .await;
    assert_eq!(
        refused.reason.as_deref(),
        Some("connect: connection refused")
    );

    // TLS over tcp, with the CA of the test server.
    let (s, ca) = https_server().await;
    let tls = run(&check(&format!(
        "{{name: t, type: tcp, frequency: 10s, target: 'localhost:{}', tls: {{ca_file: '{}'}}}}",
        s.port(),
        ca.display()
    )))
    .await;
    assert!(tls.success, "{tls:?}");
    assert!(metric(&tls, "probe_ssl_earliest_cert_expiry", None).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_checks_answers_rcodes_and_tcp_fallback() {
    let d = dns_server().await;
    let q = |rest: &str| {
        check(&format!(
            "{{name: d, type: dns, frequency: 10s, resolver: '{d}', {rest}}}"
        ))
    };
    let ok = run(&q("query: ok.test, expect_answers: [192.0.2.2]")).await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(metric(&ok, "probe_dns_answer_rrs", None), Some(2.0));
    assert!(metric(&ok, "probe_dns_lookup_time_seconds", None).is_some());
    let mx = run(&q(
        "query: ok.test, record_type: MX, expect_answers: ['10 mail.ok.test']",
    ))
    .await;
    assert!(mx.success, "{mx:?}");
    let missing = run(&q("query: ok.test, expect_answers: [192.0.2.9]")).await;
    assert_eq!(
        missing.reason.as_deref(),
        Some("answer \"192.0.2.9\" not among the A answers [192.0.2.1, 192.0.2.2]")
    );
    let nx = run(&q("query: nope.test")).await;
    assert_eq!(
        nx.reason.as_deref(),
        Some("response code NXDOMAIN, expected NOERROR")
    );
    let want_nx = run(&q("query: nope.test, expect_rcode: NXDOMAIN")).await;
    assert!(want_nx.success);
    // Truncated over UDP: asked again over TCP, which carries all 30 records.
    let big = run(&q("query: big.test, record_type: TXT")).await;
    assert!(big.success, "{big:?}");
    assert_eq!(metric(&big, "probe_dns_answer_rrs", None), Some(30.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_checks_report_expiry_and_min_days_left() {
    let (s, ca) = https_server().await;
    let base = format!(
        "name: x, type: tls, frequency: 10s, target: 'localhost:{}', tls: {{ca_file: '{}'}}",
        s.port(),
        ca.display()
    );
    let ok = run(&check(&format!("{{{base}, min_days_left: 30}}"))).await;
    assert!(ok.success, "{ok:?}");
    assert!(metric(&ok, "probe_ssl_earliest_cert_expiry", None).is_some());
    assert!(metric(&ok, "probe_ssl_last_chain_expiry_timestamp_seconds", None).is_some());
    assert_eq!(
        metric(&ok, "probe_tls_version_info", Some(("version", "TLS 1.3"))),
        Some(1.0)
    );
    let soon = run(&check(&format!("{{{base}, min_days_left: 1000}}"))).await;
    assert!(!soon.success);
    let r = soon.reason.unwrap();
    assert!(
        r.starts_with("certificate expires in ") && r.ends_with("fewer than min_days_left 1000"),
        "{r}"
    );
    let untrusted = run(&check(&format!(
        "{{name: x, type: tls, frequency: 10s, target: 'localhost:{}'}}",
        s.port()
    )))
    .await;
    assert!(untrusted.reason.unwrap().starts_with("tls handshake:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_checks_request_over_quic() {
    let (a, ca) = h3_server().await;
    let base = |path: &str, assert: &str| {
        check(&format!(
            "{{name: h, type: http3, frequency: 10s, url: 'https://localhost:{}{path}', tls: {{ca_file: '{}'}}{assert}}}",
            a.port(),
            ca.display()
        ))
    };
    let ok = run(&base(
        "/ok",
        ", assert: {headers: [{name: x-proto, regex: h3}], body_contains: h3 ok}",
    ))
    .await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(metric(&ok, "probe_http_version", None), Some(3.0));
    assert_eq!(metric(&ok, "probe_http_status_code", None), Some(200.0));
    assert!(metric(&ok, "probe_ssl_earliest_cert_expiry", None).is_some());
    let nf = run(&base("/nope", "")).await;
    assert_eq!(nf.reason.as_deref(), Some("status 404 is not 2xx"));
}

/// The kernel's ping_group_range decides whether unprivileged ping sockets may be opened.
/// Closed: the check fails with an error naming the sysctl and CAP_NET_RAW. Open: it pings
/// 127.0.0.1. The original setting is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_checks_ping_or_explain_how_to_allow_it() {
    const P: &str = "/proc/sys/net/ipv4/ping_group_range";
    let Ok(orig) = std::fs::read_to_string(P) else {
        println!("skipping the ping part: {P} is not readable");
        return;
    };
    let d = check("{name: p, type: icmp, frequency: 10s, timeout: 2s, target: 127.0.0.1}");
    if std::fs::write(P, "1 0").is_err() {
        println!("skipping the ping part: {P} is not writable here");
        let o = run(&d).await;
        if !o.success {
            let r = o.reason.unwrap();
            assert!(r.contains("ping_group_range") || r.contains("icmp"), "{r}");
        }
        return;
    }
    let closed = run(&d).await;
    let opened = std::fs::write(P, "0 2147483647");
    let open = run(&d).await;
    std::fs::write(P, orig.trim()).expect("restore ping_group_range");
    opened.unwrap();
    assert!(!closed.success);
    let r = closed.reason.unwrap();
    assert!(
        r.contains("net.ipv4.ping_group_range") && r.contains("CAP_NET_RAW"),
        "{r}"
    );
    assert!(open.success, "{open:?}");
    assert!(metric(&open, "probe_icmp_duration_seconds", Some(("phase", "rtt"))).is_some());
}

/// Bodies are decoded per Content-Encoding before assertions, for http checks and journey
/// steps; the decoded length is reported; a body invalid in its coding is a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_decoded_before_assertions() {
    let a = http_server().await;
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let o = run(&check(&format!(
            "{{name: z, type: http, frequency: 10s, url: 'http://{a}/coded/{coding}', \
             headers: {{Accept-Encoding: {coding}}}, \
             assert: {{body_contains: marmalade, body_regex: 'is (here)$'}}}}"
        )))
        .await;
        assert!(o.success, "{coding}: {o:?}");
        assert_eq!(
            metric(&o, "probe_http_uncompressed_body_length", None),
            Some(CODED_TEXT.len() as f64),
            "{coding}"
        );
        let coded = encode(coding, CODED_TEXT.as_bytes()).len() as f64;
        assert_eq!(
            metric(&o, "probe_http_content_length", None),
            Some(coded),
            "{coding}: the header's length is the coded one"
        );
        assert_eq!(metric(&o, "probe_failed_due_to_regex", None), Some(0.0));

        // Declared as that coding but not valid in it: failed, with the reason.
        let bad = run(&check(&format!(
            "{{name: z, type: http, frequency: 10s, url: 'http://{a}/coded/{coding}/broken', \
             assert: {{body_contains: marmalade}}}}"
        )))
        .await;
        assert!(!bad.success, "{coding}");
        let reason = bad.reason.clone().unwrap_or_default();
        assert!(
            reason.starts_with(&format!(
                "body is not valid {coding} (Content-Encoding: {coding}): "
            )),
            "{coding}: {reason}"
        );
        assert_eq!(metric(&bad, "probe_http_status_code", None), Some(200.0));
    }

    // A coding nobody supports is a reason too, naming what is supported.
    let odd = run(&check(&format!(
        "{{name: z, type: http, frequency: 10s, url: 'http://{a}/coded/compress/broken'}}"
    )))
    .await;
    assert_eq!(
        odd.reason.as_deref(),
        Some(
            "body is not valid compress (Content-Encoding: compress): \"compress\" is not a \
             supported content coding (supported: gzip, deflate, br, zstd)"
        )
    );

    // Journey steps: assertions and captures see the decoded body; a broken one fails its step.
    let j = run(&check(&format!(
        r#"
name: jz
type: http
frequency: 30s
steps:
  - name: fetch
    url: http://{a}/coded/br
    assert: {{body_contains: marmalade}}
    capture:
      word: {{regex: 'is (\w+),'}}
  - name: use
    url: http://{a}/coded/zstd/${{word}}
  - name: broken
    url: http://{a}/coded/gzip/broken
"#
    )))
    .await;
    assert_eq!(j.failed_step.as_deref(), Some("broken"), "{j:?}");
    assert!(j.steps[0].success && !j.steps[2].success, "{j:?}");
    assert!(
        j.reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("body is not valid gzip (Content-Encoding: gzip): "),
        "{j:?}"
    );
}

/// An https http check reports what blackbox_exporter's http prober reports for TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_checks_report_tls_and_ip_metrics() {
    let (a, ca) = https_server().await;
    let ok = run(&check(&format!(
        "{{name: s, type: http, frequency: 10s, url: 'https://localhost:{}/ok', tls: {{ca_file: '{}'}}}}",
        a.port(),
        ca.display()
    )))
    .await;
    assert!(ok.success, "{ok:?}");
    let earliest = metric(&ok, "probe_ssl_earliest_cert_expiry", None).expect("expiry");
    assert_eq!(
        metric(&ok, "probe_ssl_last_chain_expiry_timestamp_seconds", None),
        Some(earliest)
    );
    assert_eq!(
        metric(&ok, "probe_tls_version_info", Some(("version", "TLS 1.3"))),
        Some(1.0)
    );
    assert_eq!(metric(&ok, "probe_ip_protocol", None), Some(4.0));
    // Plain http has no TLS metrics.
    let h = http_server().await;
    let plain = run(&check(&format!(
        "{{name: p, type: http, frequency: 10s, url: 'http://{h}/ok'}}"
    )))
    .await;
    assert!(
        plain
            .metrics
            .iter()
            .all(|(n, _, _)| !n.starts_with("probe_ssl_") && !n.starts_with("probe_tls_")),
        "{plain:?}"
    );
    assert_eq!(metric(&plain, "probe_ip_protocol", None), Some(4.0));
}

/// `localhost` with a service on 127.0.0.1 only: with ip6 preferred (the default) every
/// check kind that connects falls back to IPv4 and says so in probe_ip_protocol; without
/// fallback it fails, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_fall_back_to_ipv4_when_ipv6_does_not_answer() {
    let has_v6 = tokio::net::lookup_host("localhost:1")
        .await
        .unwrap()
        .any(|a| a.is_ipv6());
    let b = banner_server().await;
    let h = http_server().await;
    let (s, ca) = https_server().await;
    let ca = ca.display();
    let defs = [
        format!(
            "{{name: t, type: tcp, frequency: 10s, target: 'localhost:{}'}}",
            b.port()
        ),
        format!(
            "{{name: h, type: http, frequency: 10s, url: 'http://localhost:{}/ok'}}",
            h.port()
        ),
        format!(
            "{{name: l, type: tls, frequency: 10s, target: 'localhost:{}', tls: {{ca_file: '{ca}'}}}}",
            s.port()
        ),
        format!(
            "{{name: j, type: http, frequency: 10s, steps: [{{url: 'http://localhost:{}/ok'}}]}}",
            h.port()
        ),
    ];
    for d in &defs {
        for pref in [
            "",
            ", preferred_ip_protocol: ip6",
            ", preferred_ip_protocol: ip4",
        ] {
            let text = format!("{}{pref}}}", d.strip_suffix('}').unwrap());
            let o = run(&check(&text)).await;
            assert!(o.success, "{text}: {o:?}");
            assert_eq!(metric(&o, "probe_ip_protocol", None), Some(4.0), "{text}");
        }
        let text = format!(
            "{}, preferred_ip_protocol: ip6, ip_protocol_fallback: false}}",
            d.strip_suffix('}').unwrap()
        );
        let o = run(&check(&text)).await;
        assert!(!o.success, "{text}: {o:?}");
        let reason = o.reason.unwrap_or_default();
        if has_v6 {
            assert!(reason.starts_with("connect: "), "{text}: {reason}");
        } else {
            assert_eq!(
                reason, "resolve localhost: no ip6 address (ip_protocol_fallback is false)",
                "{text}"
            );
        }
    }
}
