//! Hostile input (SPEC §2, §4): hundreds of malformed or adversarial bodies sent to
//! `PATCH /v1/organizations/{id}` on a real server. For every one of them:
//!
//! - the status is below 500;
//! - every non-2xx answer is `application/problem+json` whose `status` is the
//!   status sent and whose `code` is set;
//! - after a non-2xx answer the organization's version and its number of events are
//!   what they were before (checked after every request, so the request that
//!   changed something is named exactly); after a 2xx answer the version moved by
//!   at most one, with exactly one event per new version, and `ETag` is the version.
//!
//! Every problem is collected and reported together at the end of each test.

mod common;

use std::time::Duration;

use common::{TestApp, TestResponse};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";

// ---- a deterministic generator ------------------------------------------------------

/// xorshift64: small, seeded, and the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
}

// ---- cases and replies ----------------------------------------------------------------

/// One hostile request: a label to name it by, its content type, its body.
struct Case {
    label: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn case(label: impl Into<String>, content_type: &str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        label: label.into(),
        content_type: Some(content_type.to_owned()),
        body: body.into(),
    }
}

fn json_case(label: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
    case(label, JSON, body)
}

/// What came back, however it was sent.
struct Reply {
    status: u16,
    content_type: Option<String>,
    etag: Option<String>,
    text: String,
}

impl From<TestResponse> for Reply {
    fn from(r: TestResponse) -> Self {
        Reply {
            status: r.status,
            content_type: r.header("content-type").map(str::to_owned),
            etag: r.header("etag").map(str::to_owned),
            text: r.text,
        }
    }
}

/// A request written by hand on a raw socket, for what reqwest will not send
/// (chunked bodies, lying `Content-Length`). `head` ends with the blank line.
async fn raw_http(app: &TestApp, head: String, body: Vec<u8>) -> Result<Reply, String> {
    let addr = app.base.trim_start_matches("http://");
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        // Errors are fine: the server may answer (and close) before reading it all.
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        let _ = writer.flush().await;
        writer // kept open until the reply is read: dropping it would half-close
    };
    let read = async move {
        let mut buf = Vec::new();
        let result =
            tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut buf)).await;
        (buf, result)
    };
    let (_writer, (buf, result)) = tokio::join!(write, read);
    if result.is_err() {
        return Err("no reply within 20 s".into());
    }
    parse_http_reply(&buf).ok_or_else(|| {
        format!(
            "unreadable reply ({:?}): {:?}",
            result.ok().and_then(Result::err),
            String::from_utf8_lossy(&buf)
        )
    })
}

fn parse_http_reply(buf: &[u8]) -> Option<Reply> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = buf[split + 4..].to_vec();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    }
    Some(Reply {
        status,
        content_type: header("content-type"),
        etag: header("etag"),
        text: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---- the probe: sends, checks, and tracks the organization --------------------------------

struct Probe {
    app: TestApp,
    id: String,
    version: i64,
    events: usize,
    sent: usize,
    failures: Vec<String>,
    changed_by: Vec<String>,
}

impl Probe {
    /// A fresh server with one organization that has something in every merged field.
    async fn start() -> Probe {
        let app = TestApp::spawn().await;
        let org = app
            .create_org(json!({
                "name": "Hostile Input Target",
                "domains": ["hostile.example"],
                "primary_domain": "hostile.example",
                "address": { "city": "Paris", "country": "FR" },
                "metadata": { "plan": "pro", "nested": { "a": [1, 2, 3] } },
            }))
            .await;
        let id = org["id"].as_str().expect("id").to_owned();
        let mut probe = Probe {
            app,
            id,
            version: 0,
            events: 0,
            sent: 0,
            failures: Vec::new(),
            changed_by: Vec::new(),
        };
        let (version, events) = probe.snapshot().await.expect("the new org reads back");
        probe.version = version;
        probe.events = events;
        probe
    }

    fn path(&self) -> String {
        format!("/v1/organizations/{}", self.id)
    }

    /// The org's version and how many events it has.
    async fn snapshot(&self) -> Result<(i64, usize), String> {
        let org = self.app.get(&self.path()).send_any().await;
        if org.status != 200 {
            return Err(format!("GET answered {}: {}", org.status, org.text));
        }
        let version = org.body["version"].as_i64().ok_or("GET has no version")?;
        let mut events = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/events?limit=200", self.path());
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = self.app.get(&url).send_any().await;
            if page.status != 200 {
                return Err(format!(
                    "GET events answered {}: {}",
                    page.status, page.text
                ));
            }
            events += page.body["items"].as_array().map_or(0, Vec::len);
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        Ok((version, events))
    }

    async fn send(&mut self, case: Case) -> u16 {
        let reply: Reply = match &case.content_type {
            Some(ct) => self
                .app
                .req(Method::PATCH, &self.path())
                .raw(ct, case.body.clone())
                .send_any()
                .await
                .into(),
            None => self.send_untyped(case.body.clone()).await,
        };
        self.check(&case.label, reply).await
    }

    /// A PATCH with no `Content-Type` header at all.
    async fn send_untyped(&self, body: Vec<u8>) -> Reply {
        let response = reqwest::Client::new()
            .patch(format!("{}{}", self.app.base, self.path()))
            .bearer_auth(&self.app.admin)
            .body(body)
            .send()
            .await
            .expect("request reaches the server");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, etag) = (header("content-type"), header("etag"));
        let status = response.status().as_u16();
        Reply {
            status,
            content_type,
            etag,
            text: response.text().await.unwrap_or_default(),
        }
    }

    /// A request written on a raw socket to this org's PATCH route.
    async fn send_raw(&mut self, label: &str, headers: &str, body: Vec<u8>) -> u16 {
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n{headers}\r\n",
            self.path(),
            self.app.base.trim_start_matches("http://"),
            self.app.admin,
        );
        match raw_http(&self.app, head, body).await {
            Ok(reply) => self.check(label, reply).await,
            Err(why) => {
                self.failures.push(format!("[{label}] {why}"));
                0
            }
        }
    }

    async fn check(&mut self, label: &str, reply: Reply) -> u16 {
        self.sent += 1;
        let status = reply.status;
        let short: String = reply.text.chars().take(300).collect();
        let mut fail = |why: String| self.failures.push(format!("[{label}] {why}"));
        if status >= 500 {
            fail(format!("answered {status}: {short}"));
        }
        let success = (200..300).contains(&status);
        if !success {
            if !reply
                .content_type
                .as_deref()
                .is_some_and(|ct| ct.starts_with("application/problem+json"))
            {
                fail(format!(
                    "a {status} came as {:?}, not problem+json",
                    reply.content_type
                ));
            }
            match serde_json::from_str::<Value>(&reply.text) {
                Ok(problem) => {
                    if problem["status"] != status {
                        fail(format!(
                            "problem status {} on a {status}",
                            problem["status"]
                        ));
                    }
                    if problem["code"].as_str().is_none_or(str::is_empty) {
                        fail(format!("a {status} problem without a code: {short}"));
                    }
                }
                Err(_) => fail(format!("a {status} body that is not JSON: {short}")),
            }
        }
        match self.snapshot().await {
            Err(why) => self.failures.push(format!("[{label}] afterwards, {why}")),
            Ok((version, events)) => {
                let (dv, de) = (version - self.version, events as i64 - self.events as i64);
                if success {
                    if !(0..=1).contains(&dv) || de != dv {
                        self.failures.push(format!(
                            "[{label}] a {status} moved the version by {dv} and the events by {de}"
                        ));
                    }
                    if reply.etag.as_deref() != Some(&format!("\"{version}\"")) {
                        self.failures.push(format!(
                            "[{label}] ETag {:?} after version {version}",
                            reply.etag
                        ));
                    }
                    if dv != 0 {
                        self.changed_by.push(label.to_owned());
                    }
                } else if dv != 0 || de != 0 {
                    self.failures.push(format!(
                        "[{label}] a {status} still changed the org: version {} → {version}, events {} → {events}",
                        self.version, self.events
                    ));
                }
                self.version = version;
                self.events = events;
            }
        }
        status
    }

    async fn send_all(&mut self, cases: Vec<Case>) {
        for case in cases {
            self.send(case).await;
        }
    }

    /// Fails with every problem found; `at_least` guards against a generator that
    /// quietly produced too few cases.
    fn finish(self, at_least: usize) {
        eprintln!(
            "{} requests; {} changed the org: {:?}",
            self.sent,
            self.changed_by.len(),
            self.changed_by
        );
        assert!(
            self.sent >= at_least,
            "only {} requests were sent",
            self.sent
        );
        assert!(
            self.failures.is_empty(),
            "{} of {} requests misbehaved:\n{}",
            self.failures.len(),
            self.sent,
            self.failures.join("\n")
        );
    }
}

// ---- bodies ---------------------------------------------------------------------------------

/// A valid update body with escapes, nesting and every JSON type in it.
const VALID: &str = r#"{"alias_name":"Al \"the\" \\ Pal \u00e9 \ud83d\ude00","address":{"line1":"1 Rue","city":null,"country":"de"},"metadata":{"plan":"team","list":[1,-2.5e3,"x",null,true,false],"nested":{"k":{"z":"v"}}},"app_ids":["a","b"],"is_business":true}"#;

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> Vec<u8> {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth)).into_bytes()
}

fn syntax_cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Every truncation of a valid body.
    for end in 0..VALID.len() {
        if VALID.is_char_boundary(end) {
            cases.push(json_case(format!("truncated at {end}"), &VALID[..end]));
        } else {
            cases.push(json_case(
                format!("truncated mid-character at {end}"),
                &VALID.as_bytes()[..end],
            ));
        }
    }

    // Not UTF-8, or UTF-16 in disguise.
    let not_utf8: [(&str, &[u8]); 8] = [
        ("lone continuation byte", b"{\"name\":\"\x80\"}"),
        ("0xff 0xfe in a string", b"{\"name\":\"\xff\xfe\"}"),
        ("overlong slash", b"{\"name\":\"\xc0\xaf\"}"),
        ("CESU-8 surrogate", b"{\"name\":\"\xed\xa0\x80\"}"),
        ("truncated 3-byte sequence", b"{\"name\":\"\xe2\x82\"}"),
        ("invalid byte in a key", b"{\"na\xffme\":\"x\"}"),
        ("UTF-16LE body", b"{\x00\"\x00n\x00\"\x00:\x001\x00}\x00"),
        ("UTF-8 byte order mark", b"\xef\xbb\xbf{\"name\":\"BOM\"}"),
    ];
    for (label, body) in not_utf8 {
        cases.push(json_case(label, body.to_vec()));
    }

    // Deep nesting, at the top and inside fields.
    cases.push(json_case(
        "10 000 nested arrays",
        nested("[", "]", 10_000, ""),
    ));
    cases.push(json_case(
        "10 000 nested objects",
        nested("{\"a\":", "}", 10_000, "1"),
    ));
    cases.push(json_case("60 000 unclosed arrays", "[".repeat(60_000)));
    cases.push(json_case(
        "10 000 nested arrays in metadata",
        [
            b"{\"metadata\":{\"x\":".to_vec(),
            nested("[", "]", 10_000, ""),
            b"}}".to_vec(),
        ]
        .concat(),
    ));
    cases.push(json_case(
        "10 000 nested objects in address",
        [
            b"{\"address\":".to_vec(),
            nested("{\"city\":", "}", 10_000, "\"x\""),
            b"}".to_vec(),
        ]
        .concat(),
    ));
    cases.push(json_case(
        "10 000 nested arrays in domains",
        [
            b"{\"domains\":".to_vec(),
            nested("[", "]", 10_000, ""),
            b"}".to_vec(),
        ]
        .concat(),
    ));

    // Numbers no f64 or i64 holds.
    for number in [
        "1e400",
        "-1e400",
        "1e-400",
        "18446744073709551616",
        "-9223372036854775809",
        "1e99999999999999999999",
        "123456789012345678901234567890",
        &format!("1{}", "0".repeat(5_000)),
        &format!("0.{}1", "0".repeat(5_000)),
        "-0",
        "-0.0",
    ] {
        for field in [
            "metadata_n",
            "max_members",
            "is_business",
            "name",
            "alias_name",
        ] {
            let body = match field {
                "metadata_n" => format!(r#"{{"metadata":{{"n":{number}}}}}"#),
                "max_members" => {
                    format!(r#"{{"policy":{{"name":"p","limits":{{"max_members":{number}}}}}}}"#)
                }
                f => format!(r#"{{"{f}":{number}}}"#),
            };
            let shown: String = number.chars().take(24).collect();
            cases.push(json_case(format!("number {shown} in {field}"), body));
        }
    }

    // Tokens that are not JSON.
    for token in [
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "+1",
        ".5",
        "01",
        "0x10",
        "1e",
        "-",
        "1.",
        "undefined",
        "None",
        "True",
        "nil",
        "'single'",
        "\"unterminated",
        "`tick`",
    ] {
        cases.push(json_case(
            format!("{token} in metadata"),
            format!(r#"{{"metadata":{{"n":{token}}}}}"#),
        ));
        cases.push(json_case(
            format!("{token} as description"),
            format!(r#"{{"description":{token}}}"#),
        ));
    }

    // Wrong top-level types and framing.
    for (label, body) in [
        ("empty body", ""),
        ("whitespace only", " \n\t "),
        ("null", "null"),
        ("true", "true"),
        ("a number", "42"),
        ("a string", "\"name\""),
        ("an empty array", "[]"),
        (
            "an array of patches",
            r#"[{"op":"replace","path":"/name","value":"x"}]"#,
        ),
        ("an empty object", "{}"),
        ("two objects", r#"{"name":"A"} {"name":"B"}"#),
        ("trailing garbage", r#"{"description":"ok"}garbage"#),
        ("trailing comma", r#"{"description":"ok",}"#),
        ("missing value", r#"{"description":}"#),
        ("missing colon", r#"{"description" "x"}"#),
        ("unquoted key", r#"{description:"x"}"#),
        ("single-quoted", r#"{'description':'x'}"#),
        ("comment", r#"{/* c */"description":"x"}"#),
        ("NUL byte before the body", "\0{\"description\":\"x\"}"),
    ] {
        cases.push(json_case(label, body));
    }

    // Duplicated keys.
    for (label, body) in [
        ("duplicated name", r#"{"name":"First","name":"Second"}"#),
        (
            "duplicated name, then null",
            r#"{"name":"First","name":null}"#,
        ),
        (
            "duplicated metadata",
            r#"{"metadata":{"k":1},"metadata":null}"#,
        ),
        (
            "duplicated address key",
            r#"{"address":{"city":"x","city":7}}"#,
        ),
        ("duplicated read-only key", r#"{"version":1,"version":2}"#),
        (
            "duplicated domains",
            r#"{"domains":["a.example"],"domains":"b.example"}"#,
        ),
    ] {
        cases.push(json_case(label, body));
    }

    // Control characters, NUL and other odd code points in every string field.
    let escapes = [
        ("NUL", r"\u0000"),
        ("BEL", r"\u0007"),
        ("unit separator", r"\u001f"),
        ("DEL", r"\u007f"),
        ("line separator", r"\u2028"),
        ("byte order mark", r"\ufeff"),
        ("lone high surrogate", r"\ud800"),
        ("lone low surrogate", r"\udc00"),
        ("reversed surrogates", r"\udc00\ud800"),
        ("right-to-left override", r"\u202e"),
    ];
    let string_fields = [
        r#"{"name":"a%sb"}"#,
        r#"{"alias_name":"%s"}"#,
        r#"{"description":"x%s"}"#,
        r#"{"slug":"a%s"}"#,
        r#"{"domains":["a%s.example"]}"#,
        r#"{"phone":"+1415%s5552671"}"#,
        r#"{"time_zone":"UTC%s"}"#,
        r#"{"subscription_id":"sub%s"}"#,
        r#"{"app_ids":["app%s"]}"#,
        r#"{"address":{"city":"%s"}}"#,
        r#"{"policy":{"name":"p%s","limits":{"k%s":"v%s"}}}"#,
        r#"{"metadata":{"k%s":"v%s"}}"#,
        r#"{"%s":1}"#,
    ];
    for (name, escape) in escapes {
        for template in string_fields {
            let body = template.replace("%s", escape);
            cases.push(json_case(format!("{name} in {template}"), body));
        }
    }
    for (label, body) in [
        (
            "raw control byte in a string",
            b"{\"description\":\"a\x01b\"}".to_vec(),
        ),
        (
            "raw NUL byte in a string",
            b"{\"description\":\"a\x00b\"}".to_vec(),
        ),
        (
            "raw newline in a string",
            b"{\"description\":\"a\nb\"}".to_vec(),
        ),
        (
            "raw NUL byte between tokens",
            b"{\"description\":\x00\"x\"}".to_vec(),
        ),
    ] {
        cases.push(json_case(label, body));
    }
    cases
}

/// Puts a value somewhere in a body.
type Wrap = Box<dyn Fn(Value) -> Value>;

/// Every field, every nested key, and keys that are no field, each sent with one
/// value of every JSON type.
fn type_matrix_cases() -> Vec<Case> {
    let values = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(""),
        json!("x"),
        json!([]),
        json!(["x"]),
        json!([1]),
        json!({}),
        json!({ "a": 1 }),
    ];
    let mut places: Vec<(String, Wrap)> = Vec::new();
    let top = [
        "slug",
        "name",
        "alias_name",
        "description",
        "enabled",
        "domains",
        "primary_domain",
        "logo_url",
        "website",
        "phone",
        "address",
        "is_business",
        "mfa_required",
        "time_zone",
        "parent_id",
        "subscription_id",
        "app_ids",
        "policy",
        "metadata",
        "id",
        "managed",
        "version",
        "created_at",
        "updated_at",
        "deleted_at",
        "no_such_field",
    ];
    for key in top {
        places.push((key.to_owned(), Box::new(move |v| json!({ key: v }))));
    }
    for key in [
        "line1",
        "line2",
        "city",
        "region",
        "postal_code",
        "country",
        "planet",
    ] {
        places.push((
            format!("address.{key}"),
            Box::new(move |v| json!({ "address": { key: v } })),
        ));
    }
    places.push((
        "policy.name".into(),
        Box::new(|v| json!({ "policy": { "name": v } })),
    ));
    places.push((
        "policy.limits".into(),
        Box::new(|v| json!({ "policy": { "name": "p", "limits": v } })),
    ));
    places.push((
        "policy.limits.max_members".into(),
        Box::new(|v| json!({ "policy": { "name": "p", "limits": { "max_members": v } } })),
    ));
    places.push(("domains[0]".into(), Box::new(|v| json!({ "domains": [v] }))));
    places.push(("app_ids[0]".into(), Box::new(|v| json!({ "app_ids": [v] }))));
    let mut cases = Vec::new();
    for (place, wrap) in &places {
        for value in &values {
            let ct = if cases.len() % 2 == 0 {
                JSON
            } else {
                MERGE_PATCH
            };
            cases.push(case(
                format!("{place} = {value}"),
                ct,
                wrap(value.clone()).to_string(),
            ));
        }
    }
    cases
}

fn oversized_cases() -> Vec<Case> {
    let long = |n: usize| "a".repeat(n);
    let many = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
    let mut cases = vec![
        json_case("name of 201 characters", json!({ "name": long(201) }).to_string()),
        json_case("name of 60 000 characters", json!({ "name": long(60_000) }).to_string()),
        json_case("alias of 201 characters", json!({ "alias_name": long(201) }).to_string()),
        json_case("description of 2001 characters", json!({ "description": long(2001) }).to_string()),
        json_case("description of 60 000 characters", json!({ "description": long(60_000) }).to_string()),
        json_case("domain of 300 characters", json!({ "domains": [format!("{}.example", long(290))] }).to_string()),
        json_case("domain label of 64 characters", json!({ "domains": [format!("{}.example", long(64))] }).to_string()),
        json_case("logo URL of 3000 characters", json!({ "logo_url": format!("https://a.example/{}", long(3000)) }).to_string()),
        json_case("phone of 65 characters", json!({ "phone": format!("+1{}", "5".repeat(63)) }).to_string()),
        json_case("time zone of 65 characters", json!({ "time_zone": long(65) }).to_string()),
        json_case("subscription id of 129 characters", json!({ "subscription_id": long(129) }).to_string()),
        json_case("app id of 129 characters", json!({ "app_ids": [long(129)] }).to_string()),
        json_case("101 app ids", json!({ "app_ids": many(101, &|i| format!("app{i}")) }).to_string()),
        json_case("101 domains", json!({ "domains": many(101, &|i| format!("d{i}.example")) }).to_string()),
        json_case("10 000 app ids", json!({ "app_ids": many(10_000, &|i| format!("{i}")) }).to_string()),
        json_case("address line of 201 characters", json!({ "address": { "line1": long(201) } }).to_string()),
        json_case(
            "51 metadata keys",
            json!({ "metadata": many(51, &|i| format!("k{i}")).into_iter().map(|k| (k, json!(1))).collect::<serde_json::Map<_, _>>() }).to_string(),
        ),
        json_case("17 KiB of metadata", json!({ "metadata": { "blob": long(17 * 1024) } }).to_string()),
        json_case(
            "51 policy limits",
            json!({ "policy": { "name": "p", "limits": many(51, &|i| format!("l{i}")).into_iter().map(|k| (k, json!(1))).collect::<serde_json::Map<_, _>>() } }).to_string(),
        ),
        json_case("policy limit name of 65 characters", json!({ "policy": { "name": "p", "limits": { long(65): 1 } } }).to_string()),
        json_case("policy limit string of 201 characters", json!({ "policy": { "name": "p", "limits": { "k": long(201) } } }).to_string()),
        json_case("metadata key of 60 000 characters", json!({ "metadata": { long(60_000): 1 } }).to_string()),
    ];
    // Exactly at the limit is read (and is valid JSON); one byte more is not.
    let limit = 64 * 1024;
    let at_limit = |size: usize| {
        let mut body = br#"{"description":"at the limit"}"#.to_vec();
        body.resize(size, b' ');
        body
    };
    cases.push(json_case("body of exactly 64 KiB", at_limit(limit)));
    cases.push(json_case("body of 64 KiB + 1", at_limit(limit + 1)));
    cases.push(json_case("body of 1 MiB", at_limit(1024 * 1024)));
    cases.push(json_case("body of 3 MiB", at_limit(3 * 1024 * 1024)));
    cases
}

fn random_byte_cases(rng: &mut XorShift, count: usize) -> Vec<Case> {
    const TOKENS: [&str; 24] = [
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"name\"",
        "\"metadata\"",
        "\"address\"",
        "\"domains\"",
        "\"policy\"",
        "\"limits\"",
        "null",
        "true",
        "false",
        "-0",
        "1e5",
        "\"x\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        " ",
        "\"city\"",
        "9999999999999999999999",
        "\"\\\"\"",
    ];
    const JSON_ALPHABET: &[u8] = b"{}[]\":,0123456789.-+eEtrufalsn \\u";
    (0..count)
        .map(|i| {
            let len = rng.below(600);
            let body: Vec<u8> = match i % 4 {
                0 => (0..len).map(|_| rng.byte()).collect(),
                1 => (0..len).map(|_| b' ' + (rng.byte() % 95)).collect(),
                2 => (0..len).map(|_| *rng.pick(JSON_ALPHABET)).collect(),
                _ => {
                    let mut s = String::from("{");
                    for _ in 0..rng.below(40) {
                        let token = *rng.pick(&TOKENS);
                        s.push_str(token);
                    }
                    s.into_bytes()
                }
            };
            let ct = if i % 3 == 0 { MERGE_PATCH } else { JSON };
            case(format!("random bytes #{i} (kind {})", i % 4), ct, body)
        })
        .collect()
}

fn mutation_cases(rng: &mut XorShift, count: usize) -> Vec<Case> {
    const INSERTS: [&[u8]; 10] = [
        b"{", b"}", b"[", b"]", b"\"", b",", b":", b"null", b"\\", b"\x00",
    ];
    (0..count)
        .map(|i| {
            let mut body = VALID.as_bytes().to_vec();
            let mut steps = Vec::new();
            for _ in 0..=rng.below(4) {
                if body.is_empty() {
                    break;
                }
                let at = rng.below(body.len());
                match rng.below(6) {
                    0 => {
                        body[at] = rng.byte();
                        steps.push(format!("set {at}"));
                    }
                    1 => {
                        body.remove(at);
                        steps.push(format!("del {at}"));
                    }
                    2 => {
                        let insert = rng.pick(&INSERTS);
                        body.splice(at..at, insert.iter().copied());
                        steps.push(format!("ins {at}"));
                    }
                    3 => {
                        let end = (at + rng.below(40)).min(body.len());
                        let slice = body[at..end].to_vec();
                        body.splice(at..at, slice);
                        steps.push(format!("dup {at}..{end}"));
                    }
                    4 => {
                        let other = rng.below(body.len());
                        body.swap(at, other);
                        steps.push(format!("swap {at} {other}"));
                    }
                    _ => {
                        body.truncate(at);
                        steps.push(format!("cut {at}"));
                    }
                }
            }
            let ct = if i % 2 == 0 { JSON } else { MERGE_PATCH };
            case(format!("mutation #{i} ({})", steps.join(", ")), ct, body)
        })
        .collect()
}

// ---- tests ------------------------------------------------------------------------------------

#[tokio::test]
async fn broken_json_of_every_kind_is_refused_cleanly_and_changes_nothing() {
    let mut probe = Probe::start().await;
    let cases = syntax_cases();
    let count = cases.len();
    probe.send_all(cases).await;
    probe.finish(count.max(300));
}

#[tokio::test]
async fn every_field_sent_every_json_type_answers_cleanly_and_only_successes_change_anything() {
    let mut probe = Probe::start().await;
    let cases = type_matrix_cases();
    let count = cases.len();
    probe.send_all(cases).await;
    probe.finish(count.max(300));
}

#[tokio::test]
async fn oversized_values_and_bodies_are_refused_cleanly_and_change_nothing() {
    let mut probe = Probe::start().await;
    let cases = oversized_cases();
    let count = cases.len();
    for case in cases {
        let label = case.label.clone();
        let status = probe.send(case).await;
        let expected_413 = label.contains("64 KiB + 1") || label.contains("MiB");
        if expected_413 && status != 413 {
            probe
                .failures
                .push(format!("[{label}] answered {status}, not 413"));
        }
        if label.contains("exactly 64 KiB") && status != 200 {
            probe
                .failures
                .push(format!("[{label}] answered {status}, not 200"));
        }
    }

    // Bodies whose size is not declared up front, or declared wrongly.
    let over = chunked(&vec![b' '; 70 * 1024], 8 * 1024);
    let status = probe
        .send_raw(
            "chunked body of 70 KiB",
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
            over,
        )
        .await;
    if status != 413 {
        probe.failures.push(format!(
            "[chunked body of 70 KiB] answered {status}, not 413"
        ));
    }
    let small = br#"{"description":"sent in one-byte chunks"}"#;
    probe
        .send_raw(
            "chunked body in one-byte chunks",
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
            chunked(small, 1),
        )
        .await;
    let status = probe
        .send_raw(
            "Content-Length of 1 MiB with a short body",
            "Content-Type: application/json\r\nContent-Length: 1048576\r\n",
            br#"{"description":"x"}"#.to_vec(),
        )
        .await;
    if status != 413 {
        probe.failures.push(format!(
            "[Content-Length of 1 MiB] answered {status}, not 413"
        ));
    }
    probe
        .send_raw(
            "Content-Length shorter than the body",
            "Content-Type: application/json\r\nContent-Length: 10\r\n",
            br#"{"description":"longer than ten bytes"}"#.to_vec(),
        )
        .await;
    probe
        .send_raw(
            "Content-Length of 0",
            "Content-Type: application/json\r\nContent-Length: 0\r\n",
            Vec::new(),
        )
        .await;
    probe.finish(count + 5);
}

#[tokio::test]
async fn unknown_or_missing_content_types_are_refused_with_415() {
    let mut probe = Probe::start().await;
    let body = |n: usize| format!(r#"{{"description":"content type {n}"}}"#);
    let refused = [
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json-patch+json",
        "application/jsonx",
        "application/json5",
        "application",
        "json",
        "*/*",
        "application/*",
        ";;;",
        "",
        "application/octet-stream",
        "application/problem+json",
    ];
    let mut cases: Vec<(Case, bool)> = refused
        .iter()
        .enumerate()
        .map(|(i, ct)| (case(format!("content type {ct:?}"), ct, body(i)), true))
        .collect();
    cases.push((
        Case {
            label: "no content type".into(),
            content_type: None,
            body: body(99).into_bytes(),
        },
        true,
    ));
    for (i, ct) in [
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "Application/Merge-Patch+JSON",
    ]
    .iter()
    .enumerate()
    {
        cases.push((
            case(format!("content type {ct:?}"), ct, body(100 + i)),
            false,
        ));
    }
    let total = cases.len();
    for (case, must_refuse) in cases {
        let label = case.label.clone();
        let status = probe.send(case).await;
        if must_refuse && status != 415 {
            probe
                .failures
                .push(format!("[{label}] answered {status}, not 415"));
        }
        if !must_refuse && status != 200 {
            probe
                .failures
                .push(format!("[{label}] answered {status}, not 200"));
        }
    }
    let status = probe
        .send_raw(
            "no content type, raw",
            "Content-Length: 2\r\n",
            b"{}".to_vec(),
        )
        .await;
    if status != 415 {
        probe
            .failures
            .push(format!("[no content type, raw] answered {status}, not 415"));
    }
    probe.finish(total + 1);
}

#[tokio::test]
async fn seeded_random_bytes_are_refused_cleanly_and_change_nothing() {
    let mut probe = Probe::start().await;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let cases = random_byte_cases(&mut rng, 200);
    probe.send_all(cases).await;
    probe.finish(200);
}

#[tokio::test]
async fn seeded_mutations_of_a_valid_body_answer_cleanly_and_only_successes_change_anything() {
    let mut probe = Probe::start().await;
    let status = probe
        .send(json_case("the unmutated valid body", VALID))
        .await;
    assert_eq!(status, 200, "the base body must be valid");
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let cases = mutation_cases(&mut rng, 200);
    probe.send_all(cases).await;
    probe.finish(201);
}

/// Metadata nested around orgd's own depth limit and up to serde_json's (128):
/// accepted or refused, it must never leave an organization or an event that
/// cannot be read back (the audit trail is read with the same parser).
#[tokio::test]
async fn metadata_nested_up_to_the_parser_depth_limit_never_leaves_an_unreadable_org_or_event() {
    let mut probe = Probe::start().await;
    let limit = orgd::domain::patch::limits::METADATA_DEPTH;
    let depths: Vec<usize> = (1..=3)
        .chain(limit - 3..=limit + 2)
        .chain(118..=130)
        .collect();
    for &depth in &depths {
        for (open, close, inner, shape) in
            [("[", "]", "", "arrays"), ("{\"d\":", "}", "1", "objects")]
        {
            let label = format!("metadata {depth} {shape} deep");
            let value = nested(open, close, depth, inner);
            let body = [b"{\"metadata\":{\"deep\":".to_vec(), value, b"}}".to_vec()].concat();
            let status = probe.send(json_case(&label, body)).await;
            // The metadata object itself is one level; bodies past the parser's own
            // limit are not JSON to orgd (400), the rest past orgd's limit are 422.
            let expected: &[u16] = if depth < limit { &[200] } else { &[400, 422] };
            if !expected.contains(&status) {
                probe
                    .failures
                    .push(format!("[{label}] answered {status}, not {expected:?}"));
            }
            // Take it away again so the next depth is a change too.
            probe
                .send(json_case(
                    format!("remove {label}"),
                    r#"{"metadata":{"deep":null}}"#,
                ))
                .await;
        }
    }
    probe.finish(depths.len() * 4);
}
