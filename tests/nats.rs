//! The NATS JetStream sink against the JetStream server on 127.0.0.1:4222 (as in
//! CI): orgd creates the stream, publishes every event with its id as
//! `Nats-Msg-Id`, and a broker outage delays events without losing them. Each
//! test uses its own stream and subject prefix, and deletes the stream after.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use common::TestApp;

const NATS: &str = "127.0.0.1:4222";

fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

async fn spawn(nats_url: String, stream: &str, prefix: &str) -> TestApp {
    let (stream, prefix) = (stream.to_owned(), prefix.to_owned());
    TestApp::spawn_with(move |s| {
        s.nats_url = Some(nats_url);
        s.nats_stream = stream;
        s.nats_subject_prefix = prefix;
        s.events_poll_interval = Duration::from_millis(50);
    })
    .await
}

/// Reads every message of the stream through a fresh pull consumer, waiting until
/// there are at least `n`.
async fn read_stream(stream_name: &str, n: usize) -> Vec<async_nats::jetstream::Message> {
    let client = async_nats::connect(NATS).await.expect("NATS is reachable");
    let context = jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut stream) = context.get_stream(stream_name).await {
            let count = stream.info().await.map(|i| i.state.messages).unwrap_or(0);
            if count as usize >= n {
                let consumer: jetstream::consumer::PullConsumer = stream
                    .create_consumer(pull::Config::default())
                    .await
                    .expect("consumer");
                let mut batch = consumer
                    .fetch()
                    .max_messages(n.max(count as usize) + 10)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .expect("fetch");
                let mut messages = Vec::new();
                while let Some(message) = batch.next().await {
                    messages.push(message.expect("message"));
                }
                return messages;
            }
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream_name} did not get {n} messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_stream(name: &str) {
    if let Ok(client) = async_nats::connect(NATS).await {
        let _ = jetstream::new(client).delete_stream(name).await;
    }
}

fn msg_id(message: &async_nats::jetstream::Message) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn events_are_published_to_jetstream_with_their_id_as_message_id() {
    let stream = format!("ORGD_TEST_{}", unique());
    let prefix = format!("orgdtest.{}", unique());
    let app = spawn(format!("nats://{NATS}"), &stream, &prefix).await;
    let org = app.org_named("Acme").await;
    app.patch(
        &format!("/v1/organizations/{org}"),
        &json!({"name": "Acme 2"}),
    )
    .send(200)
    .await;
    let messages = read_stream(&stream, 2).await;
    delete_stream(&stream).await;
    let trail = app.events(&org).await;
    assert_eq!(messages.len(), 2);
    for (message, event) in messages.iter().zip(&trail) {
        assert_eq!(
            message.subject.as_str(),
            format!("{prefix}.{}", event["type"].as_str().unwrap())
        );
        assert_eq!(msg_id(message), event["id"].as_str().unwrap());
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload["id"], event["id"]);
        assert_eq!(payload["version"], event["version"]);
        assert_eq!(payload["changes"], event["changes"]);
    }
}

/// A TCP forwarder to the NATS server that the test can cut and restore.
struct Switch {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Switch {
    async fn start() -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_up, accept_links) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused in effect
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(NATS).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_links.lock().unwrap().push(link);
            }
        });
        Switch { addr, up, links }
    }

    fn connect(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Refuses new connections and cuts the open ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

#[tokio::test]
async fn a_broker_outage_delays_events_but_loses_none() {
    let stream = format!("ORGD_TEST_{}", unique());
    let prefix = format!("orgdtest.{}", unique());
    let switch = Switch::start().await;
    let app = spawn(format!("nats://{}", switch.addr), &stream, &prefix).await;
    // Down from the start: events pile up in the outbox.
    let a = app.org_named("A").await;
    let b = app.org_named("B").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    switch.connect();
    let first = read_stream(&stream, 2).await;
    assert_eq!(first.len(), 2);
    // Down again while connected.
    switch.cut();
    let c = app.org_named("C").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    switch.connect();
    let all = read_stream(&stream, 3).await;
    delete_stream(&stream).await;
    let orgs: Vec<String> = all
        .iter()
        .map(|m| {
            let payload: Value = serde_json::from_slice(&m.payload).unwrap();
            payload["organization_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(orgs, [a, b, c], "every event once, in order");
    let mut ids: Vec<String> = all.iter().map(msg_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}
