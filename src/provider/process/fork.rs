//! Fork mode, as the OpenFaaS classic watchdog: one process per call, the request body
//! on stdin and the request's metadata in `Http_*` variables; stdout is the response.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spawn::Spawn;
use super::{signal_group, Launch, Webdriver};
use crate::provider::{Invocation, LogHub, Output, ProviderError};

/// Runs one call in a new process and waits for it within the function's time limit.
pub(super) async fn invoke(
    launch: &Launch,
    logs: &LogHub,
    webdriver: Option<&Webdriver>,
    call: Invocation,
) -> Result<Output, ProviderError> {
    // Valid until this call returns: its browser leases end with it.
    let call_capability = webdriver.and_then(|w| call_webdriver(w, launch, &call.call_id));
    let http = http_env(&call);
    let mut env: Vec<(&str, &str)> = launch
        .env
        .iter()
        .chain(&http)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(capability) = &call_capability {
        env.push((crate::browser::ENV_WEBDRIVER_URL, capability.url()));
    }
    // Not tokio's Command: with the sandbox's pre-exec hook, std forks the whole gateway
    // for every call (see `spawn`).
    let spawn = Spawn {
        program: &launch.program,
        args: &launch.args,
        env,
        workdir: launch.workdir.as_deref(),
        sandbox: &launch.sandbox,
    };
    // No `die_with_gateway` here: a fork-mode process is bounded by its time limit.
    let mut child = spawn.start().map_err(|e| ProviderError::Unavailable {
        name: launch.name.clone(),
        reason: format!("cannot start {}: {e}", launch.program.display()),
    })?;
    // Its OOM score was raised by the child before exec (see `spawn`).
    let pid = child.id();
    let instance = format!("{}-{pid}", launch.name);

    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ProviderError::Internal("child process has no pipes".into()));
    };
    let body = call.body.clone();
    let feed = async move {
        // A function that does not read its input closes the pipe early: not an error.
        let _ = stdin.write_all(&body).await;
        drop(stdin);
    };
    let read_stdout = async move {
        let mut out = Vec::new();
        let mut limited = stdout.take(launch.max_response.saturating_add(1));
        let result = limited.read_to_end(&mut out).await;
        result.map(|_| out)
    };
    let run = async {
        let ((), stdout, stderr_tail, status) = tokio::join!(
            feed,
            read_stdout,
            logs.pump(&launch.name, &instance, stderr),
            child.wait()
        );
        (stdout, stderr_tail, status)
    };

    let (stdout, stderr_tail, status) = match tokio::time::timeout(launch.timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            signal_group(pid, libc::SIGKILL);
            logs.push(
                &launch.name,
                &instance,
                format!("killed after the {:?} time limit", launch.timeout),
            );
            return Err(ProviderError::Timeout {
                name: launch.name.clone(),
                limit: launch.timeout,
            });
        }
    };
    let status = status.map_err(|e| ProviderError::Internal(format!("waiting for child: {e}")))?;
    let stdout = stdout.map_err(|e| ProviderError::Internal(format!("reading stdout: {e}")))?;
    if stdout.len() as u64 > launch.max_response {
        tracing::warn!(function = %launch.name, max_response = launch.max_response, "answer larger than hark.max_response; refused with 502");
        return Err(ProviderError::Unavailable {
            name: launch.name.clone(),
            reason: format!(
                "its answer is larger than hark.max_response ({} bytes)",
                launch.max_response
            ),
        });
    }

    let mut headers = HeaderMap::new();
    if status.success() {
        headers.insert(header::CONTENT_TYPE, content_type(launch, &call.headers));
        Ok(Output {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(stdout),
            error: None,
            instance: Some(instance),
        })
    } else {
        let how = match status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        };
        let error = if stderr_tail.is_empty() {
            format!("function {} failed: {how}", launch.name)
        } else {
            format!("function {} failed: {how}: {stderr_tail}", launch.name)
        };
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(Output {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers,
            body: Bytes::from(format!("{error}\n")),
            error: Some(error),
            instance: Some(instance),
        })
    }
}

/// A capability for this call, whose URL replaces the function's `HARK_WEBDRIVER_URL`;
/// nothing when the function set its own URL (or the call id cannot sit in a URL).
fn call_webdriver(
    webdriver: &Webdriver,
    launch: &Launch,
    call_id: &str,
) -> Option<crate::browser::capability::CallCapability> {
    let (_, url) = launch
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == crate::browser::ENV_WEBDRIVER_URL)?;
    let name = launch.name.as_str();
    if *url != webdriver.capabilities.function_url(&webdriver.base, name) {
        return None;
    }
    webdriver
        .capabilities
        .open_call(&webdriver.base, name, call_id)
}

/// `content_type` from the function's environment (the classic watchdog's setting),
/// else the request's content type, else plain text.
fn content_type(launch: &Launch, request: &HeaderMap) -> HeaderValue {
    launch
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "content_type")
        .and_then(|(_, v)| HeaderValue::from_str(v).ok())
        .or_else(|| request.get(header::CONTENT_TYPE).cloned())
        .unwrap_or_else(|| HeaderValue::from_static("text/plain; charset=utf-8"))
}

/// The request as `Http_*` variables: `Http_Method`, `Http_Path`, `Http_Query`, and one
/// per header with its name in Title_Case (`Content-Type` → `Http_Content_Type`).
pub(super) fn http_env(call: &Invocation) -> Vec<(String, String)> {
    let mut env = vec![
        ("Http_Method".to_owned(), call.method.to_string()),
        ("Http_Path".to_owned(), call.path.clone()),
        (
            "Http_Query".to_owned(),
            call.query.clone().unwrap_or_default(),
        ),
        ("HARK_CALL_ID".to_owned(), call.call_id.clone()),
    ];
    for (name, value) in &call.headers {
        let Ok(value) = value.to_str() else { continue };
        let name = name.as_str();
        let mut variable = String::with_capacity("Http_".len() + name.len());
        variable.push_str("Http_");
        let mut word_start = true;
        for c in name.chars() {
            match c {
                '-' => {
                    variable.push('_');
                    word_start = true;
                }
                c if word_start => {
                    variable.push(c.to_ascii_uppercase());
                    word_start = false;
                }
                c => variable.push(c),
            }
        }
        env.push((variable, value.to_owned()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn headers_become_title_case_variables() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("x-call-id", HeaderValue::from_static("abc"));
        headers.insert("accept-language", HeaderValue::from_static("en-GB"));
        let call = Invocation {
            call_id: "abc".into(),
            method: Method::POST,
            path: "/a/b".into(),
            query: Some("x=1".into()),
            headers,
            body: Bytes::new(),
        };
        let env = http_env(&call);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Http_Method"), Some("POST"));
        assert_eq!(get("Http_Path"), Some("/a/b"));
        assert_eq!(get("Http_Query"), Some("x=1"));
        assert_eq!(get("Http_Content_Type"), Some("text/plain"));
        assert_eq!(get("Http_X_Call_Id"), Some("abc"));
        assert_eq!(get("Http_Accept_Language"), Some("en-GB"));
    }
}
