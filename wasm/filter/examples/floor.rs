//! The floor under the filter's cost, for `bench/compare.sh`: a proxy-wasm
//! HTTP filter that decides nothing. With the plugin configuration `empty`
//! it does no work at all (what V8 and proxy-wasm cost per request); with
//! `headers IP:PORT` it makes the host calls the pobox filter makes for a
//! round-robin Service (read `:authority`, write the endpoint header, which
//! replaces any client-sent copy) and writes that fixed endpoint. (For
//! session affinity and the hash policies pobox also reads
//! `source.address`, and with outlier detection the response's `:status`.)
//! With `timed-headers IP:PORT` it does the same and times it as the pobox
//! filter's `"timing": true` does, in the counters `floor.route_ns` and
//! `floor.routes`: the in-VM cost of the host calls alone, to set beside
//! the pobox filter's.
//! Built only for `wasm32`:
//! `cargo build --release --target wasm32-wasip1 --example floor`.

#[cfg(target_arch = "wasm32")]
mod floor {
    use std::rc::Rc;
    use std::time::UNIX_EPOCH;

    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

    const HEADER: &str = "x-envoy-original-dst-host";

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(None)) });
    }}

    /// `None`: empty; `Some(endpoint)`: the header work, writing `endpoint`.
    struct Root(Option<Work>);

    #[derive(Clone)]
    struct Work {
        endpoint: Rc<str>,
        /// The counters of the time spent and the requests timed.
        timing: Option<(u32, u32)>,
    }

    fn nanos() -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64)
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, size: usize) -> bool {
            let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
                .ok()
                .flatten()
                .unwrap_or_default();
            let config = String::from_utf8_lossy(&config);
            let counter = |name| hostcalls::define_metric(MetricType::Counter, name).ok();
            self.0 = match config.trim().split_once(' ') {
                None if config.trim() == "empty" => None,
                Some(("headers", endpoint)) => Some(Work {
                    endpoint: endpoint.into(),
                    timing: None,
                }),
                Some(("timed-headers", endpoint)) => Some(Work {
                    endpoint: endpoint.into(),
                    timing: counter("floor.route_ns").zip(counter("floor.routes")),
                }),
                _ => return false,
            };
            true
        }

        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http(self.0.clone())))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Http(Option<Work>);

    impl Context for Http {}

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            if let Some(work) = &self.0 {
                let started = work.timing.map(|_| nanos());
                let _ = hostcalls::get_map_value(MapType::HttpRequestHeaders, ":authority");
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    HEADER,
                    Some(&work.endpoint),
                );
                if let (Some(started), Some((spent, timed))) = (started, work.timing) {
                    let _ =
                        hostcalls::increment_metric(spent, nanos().saturating_sub(started) as i64);
                    let _ = hostcalls::increment_metric(timed, 1);
                }
            }
            Action::Continue
        }
    }
}
