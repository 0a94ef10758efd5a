//! Template behaviour as Go's `text/template` with Prometheus' functions gives it.

use super::*;
use std::collections::BTreeMap;

fn data(labels: &[(&str, &str)], value: f64) -> AlertData {
    AlertData {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        external_labels: BTreeMap::from([("cluster".to_string(), "eu1".to_string())]),
        external_url: "http://outpost.example:9470/prefix".into(),
        value,
    }
}

fn expand(text: &str) -> String {
    let q = |q: &str| -> Result<Vec<QuerySample>, String> {
        match q {
            "up" => Ok(vec![
                QuerySample {
                    labels: BTreeMap::from([
                        ("__name__".to_string(), "up".to_string()),
                        ("instance".to_string(), "b:9100".to_string()),
                    ]),
                    value: 0.0,
                },
                QuerySample {
                    labels: BTreeMap::from([
                        ("__name__".to_string(), "up".to_string()),
                        ("instance".to_string(), "a:9100".to_string()),
                    ]),
                    value: 1.0,
                },
            ]),
            "none" => Ok(vec![]),
            other => Err(format!("bad query {other:?}")),
        }
    };
    let env = Env {
        query: Some(&q),
        external_url: "http://outpost.example:9470/prefix",
    };
    expand_alert(
        "HighLoad",
        text,
        &data(
            &[
                ("instance", "host-1:9100"),
                ("job", "node"),
                ("severity", "page"),
            ],
            0.8534,
        ),
        &env,
    )
}

#[test]
fn expands_like_prometheus() {
    for (text, want) in [
        ("plain text", "plain text"),
        ("{{ $labels.instance }} is down", "host-1:9100 is down"),
        ("{{ .Labels.job }}/{{ $labels.missing }}/", "node//"),
        ("{{ $value }}", "0.8534"),
        ("{{ .Value }}", "0.8534"),
        ("{{ printf \"%.2f\" $value }}", "0.85"),
        ("{{ $value | printf \"%.1f%%\" }}", "0.9%"),
        ("{{ $value | humanizePercentage }}", "85.34%"),
        ("{{ humanize 1234567 }}", "1.235M"),
        ("{{ humanize \"2048\" }}", "2.048k"),
        ("{{ 1073741824 | humanize1024 }}", "1Gi"),
        ("{{ humanizeDuration 3725 }}", "1h 2m 5s"),
        (
            "{{ humanizeTimestamp 1435065584.128 }}",
            "2015-06-23 13:19:44.128 +0000 UTC",
        ),
        ("{{ $externalLabels.cluster }}", "eu1"),
        ("{{ $externalURL }}", "http://outpost.example:9470/prefix"),
        ("{{ pathPrefix }}", "/prefix"),
        (
            "{{ if eq $labels.severity \"page\" }}P{{ else }}T{{ end }}",
            "P",
        ),
        (
            "{{ if gt $value 0.9 }}hi{{ else if gt $value 0.5 }}mid{{ else }}lo{{ end }}",
            "mid",
        ),
        ("{{ with $labels.job }}job={{ . }}{{ end }}", "job=node"),
        ("{{ with $labels.nope }}x{{ else }}none{{ end }}", "none"),
        (
            "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
            "instance=host-1:9100;job=node;severity=page;",
        ),
        (
            "{{ range query \"up\" }}{{ .Labels.instance }}:{{ .Value }} {{ end }}",
            "b:9100:0 a:9100:1 ",
        ),
        (
            "{{ range query \"up\" | sortByLabel \"instance\" }}{{ label \"instance\" . }} {{ end }}",
            "a:9100 b:9100 ",
        ),
        (
            "{{ with query \"up\" }}{{ . | first | value | humanize }}{{ end }}",
            "0",
        ),
        (
            "{{ range query \"none\" }}x{{ else }}empty{{ end }}",
            "empty",
        ),
        (
            "{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}",
            "host-1",
        ),
        ("{{ $labels.instance | stripPort }}", "host-1"),
        ("{{ match \"^host\" $labels.instance }}", "true"),
        (
            "{{ title \"hello world\" }} {{ toUpper \"a\" }}{{ toLower \"B\" }}",
            "Hello World Ab",
        ),
        ("{{ \"a b&c\" | urlquery }}", "a+b%26c"),
        ("{{ safeHtml \"<b>\" }}", "<b>"),
        ("{{ parseDuration \"1h30m\" }}", "5400"),
        ("{{ len $labels }} {{ index $labels \"job\" }}", "3 node"),
        ("{{ and 1 0 }} {{ or 0 \"x\" }} {{ not false }}", "0 x true"),
        (
            "{{ define \"t\" }}[{{ . }}]{{ end }}{{ template \"t\" $labels.job }}",
            "[node]",
        ),
        ("{{- \"  x  \" -}}  \n  y", "  x  y"),
        ("a {{- /* comment */ -}} b", "ab"),
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
        (
            "{{ range $i, $s := query \"up\" }}{{ if $i }},{{ end }}{{ $i }}{{ end }}",
            "0,1",
        ),
        ("{{ range query \"up\" }}{{ break }}{{ end }}done", "done"),
        ("{{ print 1 2 \"a\" 3 }}", "1 2a3"),
        ("{{ printf \"%d items\" (len $labels) }}", "3 items"),
        (
            "{{ 1e6 }} {{ 100000.0 }} {{ 0x10 }} {{ 'a' }}",
            "1e+06 100000 16 97",
        ),
        (
            "{{ graphLink \"up == 0\" }}",
            "/graph?g0.expr=up+%3D%3D+0&g0.tab=0",
        ),
        (
            "{{ nil }}",
            "<error expanding template: error executing template __alert_HighLoad: template: __alert_HighLoad:1:115: executing \"__alert_HighLoad\" at <nil>: nil is not a command>",
        ),
    ] {
        assert_eq!(expand(text), want, "{text}");
    }
}

#[test]
fn errors_read_as_go_and_prometheus_print_them() {
    // The definitions Prometheus prepends are 112 bytes long; columns count from there.
    assert_eq!(
        expand("{{ humanize \"x\" }}"),
        "<error expanding template: error executing template __alert_HighLoad: template: __alert_HighLoad:1:115: executing \"__alert_HighLoad\" at <humanize \"x\">: error calling humanize: strconv.ParseFloat: parsing \"x\": invalid syntax>"
    );
    assert_eq!(
        expand("{{ nosuch 1 }}"),
        "<error expanding template: error parsing template __alert_HighLoad: template: __alert_HighLoad:1: function \"nosuch\" not defined>"
    );
    assert_eq!(
        expand("{{ $nope }}"),
        "<error expanding template: error parsing template __alert_HighLoad: template: __alert_HighLoad:1: undefined variable \"$nope\">"
    );
    assert_eq!(
        expand("{{ if true }}x"),
        "<error expanding template: error parsing template __alert_HighLoad: template: __alert_HighLoad:1: unexpected EOF>"
    );
    assert_eq!(
        expand("{{ gt $value 1 }}"),
        "<error expanding template: error executing template __alert_HighLoad: template: __alert_HighLoad:1:115: executing \"__alert_HighLoad\" at <gt $value 1>: error calling gt: incompatible types for comparison>"
    );
    assert_eq!(
        expand("{{ query \"boom\" }}"),
        "<error expanding template: error executing template __alert_HighLoad: template: __alert_HighLoad:1:115: executing \"__alert_HighLoad\" at <query \"boom\">: error calling query: bad query \"boom\">"
    );
    assert_eq!(
        expand("{{ first (query \"none\") }}"),
        "<error expanding template: error executing template __alert_HighLoad: template: __alert_HighLoad:1:115: executing \"__alert_HighLoad\" at <first (query \"none\")>: error calling first: first() called on vector with no elements>"
    );
    assert_eq!(
        expand("{{ .Nope }}"),
        "<error expanding template: error executing template __alert_HighLoad: template: __alert_HighLoad:1:115: executing \"__alert_HighLoad\" at <.Nope>: can't evaluate field Nope in type struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value float64 }>"
    );
}

#[test]
fn check_alert_template_reports_parse_errors_only() {
    assert_eq!(
        check_alert_template("A", "{{ $labels.x }} {{ humanize \"x\" }}"),
        Ok(())
    );
    assert_eq!(
        check_alert_template("A", "{{ foo }}")
            .unwrap_err()
            .to_string(),
        "template: __alert_A:1: function \"foo\" not defined"
    );
}

#[test]
fn multi_line_templates_count_lines() {
    let t = Template::parse("t", "line1\n{{ .X }}").expect("parses");
    let err = t.execute(Value::Int(1), &Env::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template: t:2:3: executing \"t\" at <.X>: can't evaluate field X in type int"
    );
}
