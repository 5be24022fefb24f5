//! `caasiope_api_request_duration_seconds{route, status}`: one histogram per route of the API
//! (and `unmatched`) and per status it answers (and `other`), in a fixed table — recorded with
//! no lock and no allocation, on every request.

use std::{fmt::Write as _, time::Duration};

use api::routes;
use exposition::{Fast, Histogram, Render};

/// The statuses the API answers, each its own series; any other is `other`.
const STATUSES: [u16; 12] = [200, 202, 400, 404, 405, 408, 413, 414, 431, 500, 503, 204];

/// The histograms, by route (in [`routes::ALL`] order, then `unmatched`) and status.
#[derive(Debug)]
pub(crate) struct ApiRequests {
    table: Box<[Histogram<Fast>]>,
}

impl Default for ApiRequests {
    fn default() -> Self {
        let cells = (routes::ALL.len() + 1) * (STATUSES.len() + 1);
        Self { table: (0..cells).map(|_| Histogram::default()).collect() }
    }
}

impl ApiRequests {
    /// A request on `route` (its index in [`routes::ALL`]; `None`: `unmatched`) answered
    /// `status` after `elapsed`.
    pub(crate) fn observe(&self, route: Option<usize>, status: u16, elapsed: Duration) {
        let r = route.filter(|r| *r < routes::ALL.len()).unwrap_or(routes::ALL.len());
        let s = STATUSES.iter().position(|t| *t == status).unwrap_or(STATUSES.len());
        self.table[r * (STATUSES.len() + 1) + s].observe(elapsed);
    }

    /// The series of every route and status seen, as family `name`.
    pub(crate) fn render(&self, out: &mut String, name: &str) {
        for (i, h) in self.table.iter().enumerate().filter(|(_, h)| h.count() > 0) {
            let (r, s) = (i / (STATUSES.len() + 1), i % (STATUSES.len() + 1));
            let route = routes::ALL.get(r).copied().unwrap_or("unmatched");
            let mut labels = format!("route=\"{}\",status=\"", exposition::label_value(route));
            match STATUSES.get(s) {
                Some(status) => {
                    let _ = write!(labels, "{status}\"");
                }
                None => labels.push_str("other\""),
            }
            h.render(out, name, &labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let r = ApiRequests::default();
        let index = |route| routes::ALL.iter().position(|r| *r == route);
        r.observe(index(routes::ACCOUNT), 200, Duration::from_millis(1));
        r.observe(index(routes::ACCOUNT), 200, Duration::from_millis(2));
        r.observe(None, 404, Duration::from_millis(1));
        r.observe(index(routes::STATUS), 418, Duration::from_millis(1));
        let mut out = String::new();
        r.render(&mut out, "x");
        assert!(out.contains("x_count{route=\"/v1/accounts/{address}\",status=\"200\"} 2\n"), "{out}");
        assert!(out.contains("x_count{route=\"unmatched\",status=\"404\"} 1\n"), "{out}");
        assert!(out.contains("x_count{route=\"/v1/status\",status=\"other\"} 1\n"), "{out}");
        assert_eq!(out.matches("_count").count(), 3, "only what was seen");
    }
}
