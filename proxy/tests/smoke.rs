//! The harness itself works: a proxy forwards to an echo server.
mod common;
use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn echo_through_the_proxy() {
    let h = Harness::start().await;
    let addr = h.proxy("echo", echo_server().await).await;
    let mut client = connect(addr).await;
    client.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut client, 5).await, b"hello");
}
