//! A loopback HTTP server standing in for huggingface.co in the hub and dataset tests: it records every request
//! (path and query, `Authorization` header) and answers with the test's handler, until it is dropped.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// (path, Authorization header) of every request, in arrival order.
type Requests = Vec<(String, Option<String>)>;

pub(crate) struct Server {
    /// `http://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
    requests: Arc<Mutex<Requests>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve on a free port; `answer(url, endpoint)` makes each response.
    pub(crate) fn start(
        answer: impl Fn(&str, &str) -> tiny_http::ResponseBox + Send + 'static,
    ) -> Server {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let requests = Arc::new(Mutex::new(Requests::new()));
        let (s, log, e) = (server.clone(), requests.clone(), endpoint.clone());
        let thread = std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let url = req.url().to_string();
                let auth = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.as_str().to_string());
                log.lock().unwrap().push((url.clone(), auth));
                let _ = req.respond(answer(&url, &e));
            }
        });
        Server {
            endpoint,
            requests,
            server,
            thread: Some(thread),
        }
    }

    /// Every request so far.
    pub(crate) fn requests(&self) -> Requests {
        self.requests.lock().unwrap().clone()
    }

    /// The path of every request so far.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.requests().into_iter().map(|(u, _)| u).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response header.
pub(crate) fn header(k: &str, v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap()
}
