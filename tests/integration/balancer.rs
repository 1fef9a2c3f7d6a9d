//! A round-robin TCP load balancer on 127.0.0.1 for the cluster tests: each connection goes to
//! the next backend that accepts it (a backend that refuses, being down, is skipped, as a load
//! balancer's passive health check would).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Balancer {
    pub address: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Balancer {
    pub fn start(backends: Vec<u16>) -> Balancer {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        runtime.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                let (backends, next) = (backends.clone(), next.clone());
                tokio::spawn(async move {
                    for _ in 0..backends.len() {
                        let port = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()];
                        if let Ok(mut backend) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { address, _runtime: runtime }
    }
}
