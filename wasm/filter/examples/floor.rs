//! The floor under the filter's cost, for `bench/compare.sh`: a proxy-wasm
//! HTTP filter that decides nothing. With the plugin configuration `empty`
//! it does no work at all (what V8 and proxy-wasm cost per request); with
//! `headers IP:PORT` it makes the host calls the pobox filter makes for a
//! round-robin Service (read `:authority`, write the endpoint header, which
//! replaces any client-sent copy) and writes that fixed endpoint. (For
//! session affinity and the hash policies pobox also reads
//! `source.address`, and with outlier detection the response's `:status`.)
//! Built only for `wasm32`:
//! `cargo build --release --target wasm32-wasip1 --example floor`.

#[cfg(target_arch = "wasm32")]
mod floor {
    use std::rc::Rc;

    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

    const HEADER: &str = "x-envoy-original-dst-host";

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(None)) });
    }}

    /// `None`: empty; `Some(endpoint)`: the header work, writing `endpoint`.
    struct Root(Option<Rc<str>>);

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, size: usize) -> bool {
            let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
                .ok()
                .flatten()
                .unwrap_or_default();
            let config = String::from_utf8_lossy(&config);
            self.0 = match config.trim().split_once(' ') {
                None if config.trim() == "empty" => None,
                Some(("headers", endpoint)) => Some(endpoint.into()),
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

    struct Http(Option<Rc<str>>);

    impl Context for Http {}

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            if let Some(endpoint) = &self.0 {
                let _ = hostcalls::get_map_value(MapType::HttpRequestHeaders, ":authority");
                let _ =
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, HEADER, Some(endpoint));
            }
            Action::Continue
        }
    }
}
