//! The dashboard at `/_aisle/ui/`: its built assets (`ui/dist`, embedded at compile time, so
//! running aisle needs no Node), the login that turns the cluster's S3 keys into a signed
//! session cookie, and the check the admin API makes of that cookie.
//!
//! The page itself holds no data; everything it shows comes from the admin API
//! (`/_aisle/v1/…`), which accepts either a SigV4 signature or a valid session cookie *with*
//! the `x-aisle-ui` header (a header other origins cannot send without a CORS preflight, which
//! the gateway never grants: no cross-site request can use the cookie).

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use sha2::Sha256;

/// Where the dashboard lives.
pub const UI_PREFIX: &str = "/_aisle/ui";
/// The session cookie.
pub const COOKIE: &str = "aisle_session";
/// Header the dashboard sends with every admin call.
pub const UI_HEADER: &str = "x-aisle-ui";
/// How long a session lasts.
const SESSION_MS: i64 = 12 * 3600 * 1000;

const INDEX_HTML: &[u8] = include_bytes!("../../ui/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../ui/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../../ui/dist/app.css");

/// Issues and checks dashboard sessions.
pub struct Sessions {
    key: Vec<u8>,
    access_key: String,
    secret_key: String,
}

#[derive(Deserialize)]
struct Login {
    access_key: String,
    secret_key: String,
}

impl Sessions {
    /// Sessions signed with a key derived from the cluster secret, for these S3 keys.
    pub fn new(cluster_secret: &str, access_key: &str, secret_key: &str) -> Sessions {
        use sha2::Digest;
        Sessions {
            key: Sha256::digest(format!("ui-session\0{cluster_secret}")).to_vec(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    fn mac(&self, expiry_ms: i64) -> String {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        m.update(expiry_ms.to_string().as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    fn issue(&self) -> String {
        let expiry = aisle_cluster::now_ms() + SESSION_MS;
        format!("{expiry}.{}", self.mac(expiry))
    }

    /// A dashboard call: a valid, unexpired session cookie and the dashboard's header.
    pub fn valid(&self, headers: &HeaderMap) -> bool {
        if !headers.contains_key(UI_HEADER) {
            return false;
        }
        let Some(value) = cookie(headers, COOKIE) else {
            return false;
        };
        let Some((expiry, mac)) = value.split_once('.') else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            return false;
        };
        expiry > aisle_cluster::now_ms()
            && aisle_cluster::auth::constant_time_eq(mac.as_bytes(), self.mac(expiry).as_bytes())
    }

    fn keys_match(&self, l: &Login) -> bool {
        use aisle_cluster::auth::constant_time_eq;
        // Both compared, always: no early exit that tells which one was wrong.
        let a = constant_time_eq(l.access_key.as_bytes(), self.access_key.as_bytes());
        let s = constant_time_eq(l.secret_key.as_bytes(), self.secret_key.as_bytes());
        a & s
    }
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn respond(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<s3s::Body>,
) -> Response<s3s::Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .body(body.into())
        .expect("valid response")
}

/// Serve `/_aisle/ui…`: the page, its assets, login and logout.
pub async fn serve(sessions: &Sessions, req: Request<Incoming>) -> Response<s3s::Body> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix(UI_PREFIX).unwrap_or("");
    match (req.method().clone(), rest) {
        (Method::GET, "" | "/" | "/index.html") => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            bytes::Bytes::from_static(INDEX_HTML),
        ),
        (Method::GET, "/app.js") => respond(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            bytes::Bytes::from_static(APP_JS),
        ),
        (Method::GET, "/app.css") => respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            bytes::Bytes::from_static(APP_CSS),
        ),
        (Method::POST, "/login") => {
            let body = match Limited::new(req.into_body(), 16 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return respond(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        bytes::Bytes::from_static(b"bad body"),
                    );
                }
            };
            let Ok(login) = serde_json::from_slice::<Login>(&body) else {
                return respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    bytes::Bytes::from_static(b"expected access_key and secret_key"),
                );
            };
            if !sessions.keys_match(&login) {
                tracing::warn!("dashboard login refused");
                return respond(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    bytes::Bytes::from_static(b"wrong keys"),
                );
            }
            let mut r = respond(
                StatusCode::OK,
                "application/json",
                bytes::Bytes::from_static(b"{}"),
            );
            let c = format!(
                "{COOKIE}={}; Path=/_aisle; HttpOnly; SameSite=Strict; Max-Age={}",
                sessions.issue(),
                SESSION_MS / 1000
            );
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&c).expect("ascii cookie"),
            );
            r
        }
        (Method::POST, "/logout") => {
            let mut r = respond(
                StatusCode::OK,
                "application/json",
                bytes::Bytes::from_static(b"{}"),
            );
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "aisle_session=; Path=/_aisle; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            r
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            bytes::Bytes::from_static(b"no such dashboard path"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str, ui: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        if ui {
            h.insert(UI_HEADER, HeaderValue::from_static("1"));
        }
        h
    }

    #[test]
    fn sessions_are_signed_expire_and_need_the_header() {
        let s = Sessions::new("secret", "AK", "SK");
        let c = format!("other=1; {COOKIE}={}", s.issue());
        assert!(s.valid(&headers(&c, true)));
        assert!(
            !s.valid(&headers(&c, false)),
            "the dashboard header is required"
        );
        let forged = format!("{COOKIE}=99999999999999.{}", "0".repeat(64));
        assert!(!s.valid(&headers(&forged, true)));
        let expired = format!("{COOKIE}=1.{}", s.mac(1));
        assert!(!s.valid(&headers(&expired, true)));
        let other = Sessions::new("another secret", "AK", "SK");
        assert!(
            !other.valid(&headers(&c, true)),
            "signed by this cluster only"
        );
        assert!(s.keys_match(&Login {
            access_key: "AK".into(),
            secret_key: "SK".into()
        }));
        assert!(!s.keys_match(&Login {
            access_key: "AK".into(),
            secret_key: "no".into()
        }));
    }
}
