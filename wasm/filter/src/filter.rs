//! The proxy-wasm glue: one root context per VM (Envoy runs one VM per
//! worker thread, plus one on the main thread) owning a [`Router`], one HTTP
//! context per request.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use pobox::{Clock, Outcome};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use crate::config::{NoRoute, Settings};
use crate::route::{source_ip, Headers, Routed, Router};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<Root>::default() });
}}

fn log(level: LogLevel, message: &str) {
    // Logging is best effort: a host that cannot log must not stop routing.
    let _ = hostcalls::log(level, &format!("pobox: {message}"));
}

fn host_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Envoy's clock (`proxy_get_current_time_nanoseconds`), held monotonic: the
/// core's affinity timeouts must never see time go backwards.
#[derive(Debug, Default)]
struct HostClock {
    last: AtomicU64,
}

impl Clock for HostClock {
    fn now(&self) -> Duration {
        let now = host_nanos();
        let last = self.last.fetch_max(now, Ordering::Relaxed);
        Duration::from_nanos(now.max(last))
    }
}

#[derive(Default, Clone, Copy)]
struct Metrics {
    updates_applied: Option<u32>,
    updates_rejected: Option<u32>,
    polls_unchanged: Option<u32>,
    route_ns: Option<u32>,
    routes: Option<u32>,
}

impl Metrics {
    fn define(timing: bool) -> Metrics {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Metrics {
            updates_applied: counter("pobox.updates_applied"),
            updates_rejected: counter("pobox.updates_rejected"),
            polls_unchanged: counter("pobox.polls_unchanged"),
            route_ns: if timing {
                counter("pobox.route_ns")
            } else {
                None
            },
            routes: if timing {
                counter("pobox.routes")
            } else {
                None
            },
        }
    }
}

fn bump(metric: Option<u32>, by: u64) {
    if let Some(id) = metric {
        let _ = hostcalls::increment_metric(id, by as i64);
    }
}

/// The validators of the last List received (applied or rejected): sent
/// back so that an unchanged List costs a 304 and no parsing.
#[derive(Default)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

#[derive(Default)]
struct Root {
    router: Option<Rc<Router>>,
    metrics: Metrics,
    seen: Validators,
    poll_in_flight: Option<u32>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        if self.poll_in_flight != Some(token) {
            return;
        }
        self.poll_in_flight = None;
        let Some(router) = self.router.clone() else {
            return;
        };
        let header = |name: &str| {
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
        };
        let status = header(":status").unwrap_or_default();
        match status.as_str() {
            "304" => {
                bump(self.metrics.polls_unchanged, 1);
                return;
            }
            "200" => {}
            "" => {
                log(LogLevel::Warn, "update poll failed (no response: timeout or connection error); keeping the current state");
                return;
            }
            other => {
                log(
                    LogLevel::Warn,
                    &format!("update poll answered {other}; keeping the current state"),
                );
                return;
            }
        }
        let validators = Validators {
            etag: header("etag"),
            last_modified: header("last-modified"),
        };
        if validators.etag.is_some() && validators.etag == self.seen.etag {
            // The source ignored If-None-Match: still nothing new.
            bump(self.metrics.polls_unchanged, 1);
            return;
        }
        self.seen = validators;
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let mesh = router.mesh();
        let result = if body.iter().all(u8::is_ascii_whitespace) {
            Err("the response body is empty".to_owned())
        } else {
            mesh.replace(&body).map_err(|e| e.to_string())
        };
        match result {
            Ok(report) => {
                bump(self.metrics.updates_applied, 1);
                if report.changed {
                    log(
                        LogLevel::Info,
                        &format!("update applied: snapshot version {}", report.version),
                    );
                }
                for warning in report.warnings {
                    log(LogLevel::Warn, &format!("update: {warning}"));
                }
            }
            Err(e) => {
                bump(self.metrics.updates_rejected, 1);
                log(
                    LogLevel::Warn,
                    &format!(
                        "update rejected, keeping snapshot version {}: {e}",
                        mesh.version()
                    ),
                );
            }
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        // Every VM starts from the same memory image: seed `random` and
        // `least-request` from the host clock so that VMs differ.
        pobox::reseed_thread_rng(host_nanos());
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let input = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        let router = Settings::parse(&input)
            .and_then(|settings| Router::new(settings, Arc::new(HostClock::default())));
        let router = match router {
            Ok(router) => router,
            Err(e) => {
                log(LogLevel::Error, &e);
                return false;
            }
        };
        self.metrics = Metrics::define(router.settings().timing);
        self.seen = Validators::default();
        self.poll_in_flight = None;
        let period = router.settings().update.as_ref().map(|u| u.interval);
        if let Err(status) = hostcalls::set_tick_period(period.unwrap_or(Duration::ZERO)) {
            log(
                LogLevel::Error,
                &format!("cannot set the poll period: {status:?}"),
            );
            return false;
        }
        log(
            LogLevel::Info,
            &format!(
                "configured: snapshot version {}, {} Services",
                router.mesh().version(),
                router.mesh().snapshot().services().len()
            ),
        );
        self.router = Some(Rc::new(router));
        true
    }

    fn on_tick(&mut self) {
        let Some(router) = &self.router else { return };
        let Some(source) = &router.settings().update else {
            return;
        };
        if self.poll_in_flight.is_some() {
            return;
        }
        let mut headers = vec![
            (":method", "GET"),
            (":path", source.path.as_str()),
            (":authority", source.authority.as_str()),
            ("accept", "application/json, application/yaml"),
        ];
        if let Some(etag) = &self.seen.etag {
            headers.push(("if-none-match", etag));
        }
        if let Some(date) = &self.seen.last_modified {
            headers.push(("if-modified-since", date));
        }
        match hostcalls::dispatch_http_call(&source.cluster, headers, None, vec![], source.timeout)
        {
            Ok(token) => self.poll_in_flight = Some(token),
            Err(status) => log(
                LogLevel::Warn,
                &format!(
                    "cannot poll cluster {:?} for updates: {status:?}",
                    source.cluster
                ),
            ),
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            router: self.router.clone(),
            metrics: self.metrics,
            request: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The request headers of the current HTTP context.
struct HostHeaders;

impl Headers for HostHeaders {
    fn get(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    /// Envoy's replace (`setCopy`) removes every value of the header before
    /// adding the new one. If the host refuses, the header is removed, so
    /// that no client-sent copy is left to choose the backend.
    fn set(&mut self, name: &str, value: &str) {
        if let Err(status) =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
        {
            log(LogLevel::Error, &format!("cannot set {name}: {status:?}"));
            self.remove(name);
        }
    }

    fn remove(&mut self, name: &str) {
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None) {
            log(
                LogLevel::Error,
                &format!("cannot remove {name}: {status:?}"),
            );
        }
    }
}

struct Http {
    router: Option<Rc<Router>>,
    metrics: Metrics,
    request: Option<pobox::Request>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(router) = &self.router else {
            return Action::Continue;
        };
        let started = self.metrics.routes.map(|_| host_nanos());
        // A host call, made only for Services that read the client's IP.
        let source = || {
            hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
                .and_then(|bytes| source_ip(&bytes))
        };
        let action = match router.route(&mut HostHeaders, source) {
            Routed::Endpoint(request) => {
                self.request = Some(request);
                Action::Continue
            }
            Routed::NoRoute(e) => match router.settings().no_route {
                NoRoute::Pass => Action::Continue,
                NoRoute::Reject => {
                    let body = format!("pobox: {e}\n");
                    let reply = hostcalls::send_http_response(
                        503,
                        vec![("content-type", "text/plain; charset=utf-8")],
                        Some(body.as_bytes()),
                    );
                    if let Err(status) = reply {
                        log(LogLevel::Error, &format!("cannot reply 503: {status:?}"));
                    }
                    Action::Pause
                }
            },
        };
        if let Some(started) = started {
            bump(self.metrics.route_ns, host_nanos().saturating_sub(started));
            bump(self.metrics.routes, 1);
        }
        action
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(request) = self.request.take() {
            if !request.wants_outcome() {
                // No passive health for this Service: dropping the request
                // ends it (least-request), without a host call for :status.
                return Action::Continue;
            }
            // Envoy's own 503 on a refused or reset connection arrives here
            // too: passive health sees every failure.
            let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten()
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            request.finish(if status >= 500 || status == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            });
        }
        Action::Continue
    }
}
