use async_nats::jetstream::{self, consumer::pull, stream};
use std::time::Duration;

#[tokio::test]
async fn probe_backoff() {
    let c = async_nats::connect("127.0.0.1:4222").await.unwrap();
    let js = jetstream::new(c);
    let _ = js.delete_stream("PROBE_X").await;
    let s = js
        .create_stream(stream::Config {
            name: "PROBE_X".into(),
            subjects: vec!["probex.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(120),
            max_message_size: 1 << 20,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    println!("stream cfg {:?}", s.cached_info().config);
    let cons = s
        .create_consumer(pull::Config {
            durable_name: Some("c1".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
            filter_subject: "probex.a".into(),
            ..Default::default()
        })
        .await;
    match cons {
        Ok(mut c) => println!("consumer cfg {:?}", c.info().await.unwrap().config),
        Err(e) => println!("err {e:?}"),
    }
    js.delete_stream("PROBE_X").await.unwrap();
}
