//! Telegram bots: `POST /telegram/{bot}` comes in for each update Telegram sends the bot's
//! webhook; it is checked by the secret token given to `setWebhook`
//! (`X-Telegram-Bot-Api-Secret-Token`, compared in constant time), deduplicated by
//! `update_id` in the same commit that queues its call, and routed by command (`/book`) or
//! to the function for plain messages. A result ready within the route's budget goes out in
//! the webhook answer (`{"method": "sendMessage", ...}`); a later one with `sendMessage`
//! and the bot token, retried, surviving a restart ([`ChannelRoute::deliver`]). `hark telegram
//! set-webhook` registers the webhook with a fresh secret token ([`set_webhook`]).

#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::common::route::Outcome;
use super::common::{
    api_url, contract, delivery::json_invocation, duration_setting, invalid, BuildContext,
    ByteSize, ChannelCall, ChannelError, ChannelRoute, ConfigError, Delivery, Handled, ReplyTo,
    RouteCore,
};
use crate::auth::scope;
use crate::dispatch::queue::{CallResult, Submitted};
use crate::error::ApiError;
use crate::function::FunctionName;
use crate::server::AppState;
use crate::channels::common::ChannelReplies;
use crate::verify::{Offline, Report};

/// The Bot API's base URL.
pub const DEFAULT_API: &str = "https://api.telegram.org";
/// How long a function may take for its result to go in the webhook answer.
pub const DEFAULT_ACK_BUDGET: Duration = Duration::from_secs(2);
/// How long a late result is retried with `sendMessage`.
pub const SEND_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// The updates a webhook set by `hark telegram set-webhook` receives.
/// (Not `edited_message`: editing a typo in `/deploy` must not run it again.)
pub const ALLOWED_UPDATES: [&str; 2] = ["message", "channel_post"];
/// The longest text `sendMessage` takes.
pub const MAX_TEXT: usize = 4096;

/// One bot, as written under `channels.telegram.NAME` in `hark.yml`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TelegramRouteConfig {
    /// Name of the secret holding the bot token from @BotFather.
    pub bot_token: String,
    /// Name of the secret holding the webhook's secret token: `hark telegram set-webhook`
    /// makes a fresh one and stores it under this name (until then, updates are refused).
    pub secret_token: String,
    /// Command (`/book`) → function.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// The function for plain messages.
    #[serde(default)]
    pub function: Option<String>,
    /// How long a function may take for its result to go in the webhook answer (default
    /// 2s); a slower result is sent with `sendMessage`.
    #[serde(default)]
    pub ack_budget: Option<String>,
    /// Bot API base URL (default <https://api.telegram.org>).
    #[serde(default)]
    pub api: Option<String>,
    /// The bot's username: in a group, a command addressed to another bot
    /// (`/book@OtherBot`) is then ignored.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

/// A checked Telegram bot.
pub struct TelegramRoute {
    pub core: RouteCore,
    bot_token: String,
    /// The secret that holds the secret token, for `set-webhook` to store a new one.
    secret_name: String,
    /// The secret tokens accepted: one, or the old and the new while `set-webhook` runs.
    secret_tokens: RwLock<Vec<Vec<u8>>>,
    /// Held through a `set-webhook`, so two cannot interleave.
    setting: tokio::sync::Mutex<()>,
    commands: BTreeMap<String, FunctionName>,
    function: Option<FunctionName>,
    ack_budget: Duration,
    api: String,
    username: Option<String>,
}

impl TelegramRouteConfig {
    /// Resolves the secrets and checks the functions.
    pub async fn build(
        self,
        name: &str,
        ctx: &BuildContext<'_>,
    ) -> Result<TelegramRoute, ConfigError> {
        let route = format!("channels.telegram.{name}");
        let core = ctx.core::<TelegramRoute>(name, self.max_body, self.max_inflight)?;
        if self.commands.is_empty() && self.function.is_none() {
            return Err(invalid(&route, "set function, commands or both"));
        }
        let commands = self
            .commands
            .into_iter()
            .map(|(command, f)| {
                if !command.starts_with('/') {
                    return Err(invalid(
                        &route,
                        format!("command {command:?} must start with /"),
                    ));
                }
                let function = ctx.function(&format!("{route}.commands"), &f)?;
                Ok((command.to_lowercase(), function))
            })
            .collect::<Result<_, ConfigError>>()?;
        let function = match &self.function {
            Some(f) => Some(ctx.function(&route, f)?),
            None => None,
        };
        let bot_token = String::from_utf8(ctx.secret(&route, &self.bot_token).await?)
            .map_err(|_| invalid(&route, format!("secret {:?} is not text", self.bot_token)))?
            .trim()
            .to_owned();
        // Before the first `hark telegram set-webhook` there is no secret token yet: the
        // route starts, refuses every update, and says what to run.
        let secret_tokens = match ctx.secrets.resolve(&self.secret_token).await? {
            Some(token) => {
                let token = token.trim_ascii().to_vec();
                if let Err(problem) = verify::check_token(&token) {
                    return Err(invalid(
                        &route,
                        format!("secret {:?} {problem}", self.secret_token),
                    ));
                }
                vec![token]
            }
            None => {
                tracing::warn!(channel = "telegram", route = name, secret = self.secret_token, "no secret token yet: every update is refused until `hark telegram set-webhook {name} --url https://HOST/telegram/{name}` sets one");
                Vec::new()
            }
        };
        let api = api_url(&route, self.api.as_deref(), DEFAULT_API)?;
        Ok(TelegramRoute {
            core,
            bot_token,
            secret_name: self.secret_token,
            secret_tokens: RwLock::new(secret_tokens),
            setting: tokio::sync::Mutex::new(()),
            username: self.username,
            commands,
            function,
            ack_budget: duration_setting(
                &route,
                "ack_budget",
                self.ack_budget.as_deref(),
                DEFAULT_ACK_BUDGET,
            )?,
            api,
        })
    }
}

impl TelegramRoute {
    fn secret_tokens(&self) -> Vec<Vec<u8>> {
        self.secret_tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_secret_tokens(&self, tokens: Vec<Vec<u8>>) {
        *self
            .secret_tokens
            .write()
            .unwrap_or_else(|e| e.into_inner()) = tokens;
    }

    /// `{api}/bot{token}/{method}`. Holds the token: never log it.
    fn method_url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api, self.bot_token)
    }
}

contract::endpoint! {
    #[utoipa::path(post, path = "/telegram/{bot}", operation_id = "telegram_update", tag = "channels", description = "Telegram updates for the `telegram` route named `bot` in hark.yml, checked by `X-Telegram-Bot-Api-Secret-Token`; the reply is in the answer (`sendMessage`) or sent later.", params(("bot" = String, Path, description = "Route name in hark.yml")), request_body(content = Object, description = "A Telegram Update", content_type = "application/json"), responses((status = 200, description = "Accepted; the reply, if ready, as a `sendMessage` method", body = Object), (status = 400, description = "Malformed body", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "Secret token missing or wrong", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No route of that name in hark.yml", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over the route's limit", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The route is at its max_inflight", body = crate::channels::api::openapi::ErrorBody)))]
    TelegramRoute
}

/// The parts of a Telegram `Update` Hark reads.
#[derive(Debug, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    channel_post: Option<Message>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub message_id: i64,
    pub chat: Chat,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    from: Value,
}

#[derive(Debug, Deserialize)]
pub struct Chat {
    pub id: i64,
}

impl Update {
    /// The message of the update, for the kinds Hark routes.
    pub fn message(&self) -> Option<&Message> {
        self.message.as_ref().or(self.channel_post.as_ref())
    }
}

/// `/book@HarkBot next friday` → (`/book`, `next friday`); plain text → `None`.
pub fn command(text: &str) -> Option<(String, &str)> {
    command_to(text).map(|(name, _, rest)| (name, rest))
}

/// [`command`], with the bot it is addressed to (`HarkBot`), if named.
fn command_to(text: &str) -> Option<(String, Option<&str>, &str)> {
    let text = text.trim_start();
    if !text.starts_with('/') {
        return None;
    }
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let (name, to) = match word.split_once('@') {
        Some((name, to)) => (name, Some(to)),
        None => (word, None),
    };
    Some((name.to_lowercase(), to, rest.trim()))
}

impl ChannelRoute for TelegramRoute {
    fn explain(report: &mut Report, r: &Offline<'_>) {
        verify::explain_into(report, r.secret, r.headers);
    }

    type Reply = TelegramReply;

    /// Sends a finished call's result with `sendMessage`, retried with backoff for
    /// [`SEND_DEADLINE`].
    async fn deliver(
        replies: &ChannelReplies,
        reply: TelegramReply,
        result: &CallResult,
    ) -> Result<(), String> {
        let (channels, reply) = (&replies.channels, &reply);
        let route = channels
            .telegram
            .get(&reply.bot)
            .ok_or_else(|| format!("no Telegram route named {:?} any more", reply.bot))?;
        let Some(text) = reply_text(result) else {
            return Ok(());
        };
        let mut message = send_message(reply.chat_id, reply.reply_to, text);
        if let Some(object) = message.as_object_mut() {
            object.remove("method");
        }
        let url = route.method_url("sendMessage");
        let outbound = &channels.outbound;
        outbound
            .send(
                "telegram sendMessage",
                Instant::now() + SEND_DEADLINE,
                |client| client.post(&url).json(&message),
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(channel = "telegram", route = %reply.bot, function = result.function, "sent result with sendMessage");
        Ok(())
    }

    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let (state, call_id, parts, body, delivery) = d.into_parts();
        let headers = parts.headers;
        verify::verify(&route.secret_tokens(), &headers)?;
        let update: Update = serde_json::from_slice(&body)
            .map_err(|e| ChannelError::Malformed(format!("not a Telegram update: {e}")))?;
        *delivery = Some(update.update_id.to_string());
        let Some(message) = update.message() else {
            return Ok((Outcome::Accepted, ignored("not a message")));
        };
        let Some(text) = message.text.as_deref() else {
            return Ok((Outcome::Accepted, ignored("a message without text")));
        };
        let addressed = command_to(text);
        if let (Some((_, Some(to), _)), Some(me)) = (&addressed, &route.username) {
            if !to.eq_ignore_ascii_case(me.trim_start_matches('@')) {
                return Ok((Outcome::Accepted, ignored("a command for another bot")));
            }
        }
        let (function, command, args) = match addressed.map(|(name, _, args)| (name, args)) {
            Some((name, args)) => match route.commands.get(&name) {
                Some(function) => (function, Some(name), args),
                None => match &route.function {
                    Some(function) => (function, Some(name), args),
                    None => {
                        let known: Vec<&str> = route.commands.keys().map(String::as_str).collect();
                        let text = format!("I know {}.", known.join(", "));
                        let answer = send_message(message.chat.id, message.message_id, json!(text));
                        return Ok((Outcome::Accepted, Json(answer).into_response()));
                    }
                },
            },
            None => match &route.function {
                Some(function) => (function, None, text.trim()),
                None => return Ok((Outcome::Accepted, ignored("no function for plain messages"))),
            },
        };
        let input = json!({
            "type": "message",
            "command": command,
            "text": args,
            "chat": { "id": message.chat.id },
            "user": message.from,
            "update": serde_json::from_slice::<Value>(&body).unwrap_or_default(),
        });
        let call = json_invocation(call_id, &route.core, delivery.as_deref(), &input);
        let reply = TelegramReply {
            bot: route.core.name.clone(),
            chat_id: message.chat.id,
            reply_to: message.message_id,
        };
        let (chat_id, message_id) = (message.chat.id, message.message_id);
        let submitted = ChannelCall {
            route: &route.core,
            function,
            call,
            reply: Some(ReplyTo::new::<TelegramRoute>(&reply)),
            dedupe: delivery.as_deref(),
            wait: Some(route.ack_budget),
            answers: true,
            no_retries: false,
        }
        .submit(&state.queue)
        .await?;
        match submitted {
            Submitted::Finished(result) => {
                let answer = match reply_text(&result) {
                    Some(text) => Json(send_message(chat_id, message_id, text)).into_response(),
                    None => StatusCode::OK.into_response(),
                };
                Ok((Outcome::Accepted, answer))
            }
            Submitted::Queued => Ok((Outcome::Accepted, StatusCode::OK.into_response())),
            Submitted::Duplicate => {
                let id = delivery.as_deref().unwrap_or_default();
                Ok((
                    Outcome::Duplicate,
                    Json(json!({ "duplicate": id })).into_response(),
                ))
            }
        }
    }
}

/// A 200 that runs nothing, saying why.
fn ignored(why: &str) -> Response {
    Json(json!({ "ignored": why })).into_response()
}

/// A `sendMessage` call: `text` is the message text, or an object of `sendMessage`
/// parameters the function chose (`text`, `parse_mode`, `reply_markup`...). Text longer
/// than Telegram takes is cut.
fn send_message(chat_id: i64, reply_to: i64, text: Value) -> Value {
    let mut message = match text {
        Value::Object(object) => object,
        text => [("text".to_owned(), text)].into_iter().collect(),
    };
    if let Some(Value::String(text)) = message.get_mut("text") {
        if text.chars().count() > MAX_TEXT {
            *text = text.chars().take(MAX_TEXT - 1).chain(['…']).collect();
        }
    }
    message.insert("method".into(), json!("sendMessage"));
    message.entry("chat_id").or_insert(json!(chat_id));
    message
        .entry("reply_parameters")
        .or_insert(json!({ "message_id": reply_to, "allow_sending_without_reply": true }));
    Value::Object(message)
}

/// What a result says: an apology for a failure, the function's own `sendMessage`
/// parameters (a JSON object with `text`), its output as text, or nothing for no output.
fn reply_text(result: &CallResult) -> Option<Value> {
    if let Some(apology) = super::common::reply::apology(result) {
        return Some(json!(apology));
    }
    let body = String::from_utf8_lossy(&result.body);
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(body) {
        Ok(object @ Value::Object(_)) if object.get("text").is_some() => Some(object),
        _ => Some(json!(body)),
    }
}

/// Where a Telegram call's late result goes: a chat of the bot the route names (never its
/// token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramReply {
    pub bot: String,
    pub chat_id: i64,
    /// The message answered.
    pub reply_to: i64,
}


/// What `hark telegram set-webhook` sends.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct SetWebhook {
    /// The public HTTPS URL Telegram is to call: `https://HOST/telegram/BOT`.
    pub url: String,
    /// Drop the updates Telegram holds for the bot.
    #[serde(default)]
    pub drop_pending_updates: bool,
}

#[utoipa::path(post, path = "/system/channels/telegram/{bot}/webhook", tag = "channels", description = "Registers the bot's webhook with Telegram (`setWebhook`) under a fresh secret token, which is stored as the route's `secret_token` secret and checked from then on.", security(("bearer" = [])), params(("bot" = String, Path, description = "Route name in hark.yml")), request_body(content = SetWebhook, content_type = "application/json"), responses((status = 200, description = "Registered", body = Object), (status = 404, description = "No such bot", body = crate::channels::api::openapi::ErrorBody), (status = 502, description = "Telegram refused or could not be reached", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "No valid bearer token", body = crate::channels::api::openapi::ErrorBody), (status = 403, description = "The token is not an admin token", body = crate::channels::api::openapi::ErrorBody)))]
/// `POST /system/channels/telegram/{bot}/webhook`: `setWebhook` with a fresh secret token,
/// which is then stored and checked. While Telegram takes it, old and new are accepted.
pub async fn set_webhook(
    State(state): State<Arc<AppState>>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // Admin only: pointing the bot elsewhere hands over its users' messages.
    state.auth.check(&headers, scope::ADMIN).await?;
    let request: SetWebhook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let route = state
        .channels
        .telegram
        .get(&bot)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no telegram route named {bot:?}")))?;
    if !request.url.starts_with("https://") && !request.url.starts_with("http://") {
        return Err(ApiError::bad_request(format!(
            "url {:?} is not an http(s) URL",
            request.url
        )));
    }
    let _setting = route.setting.lock().await;
    let old = route.secret_tokens();
    let fresh = hex::encode(rand::random::<[u8; 32]>());
    let mut both = old.clone();
    both.push(fresh.as_bytes().to_vec());
    route.set_secret_tokens(both);
    let body = json!({
        "url": request.url,
        "secret_token": fresh,
        "allowed_updates": ALLOWED_UPDATES,
        "drop_pending_updates": request.drop_pending_updates,
    });
    let url = route.method_url("setWebhook");
    let outbound = &state.channels.outbound;
    let answer = outbound
        .send(
            "telegram setWebhook",
            Instant::now() + Duration::from_secs(20),
            |client| client.post(&url).json(&body),
        )
        .await;
    if let Err(e) = answer {
        // Refused: Telegram keeps the old token. Otherwise it may have taken the new one
        // before the answer was lost, so both stay accepted until the next set-webhook.
        if matches!(e, super::common::delivery::SendError::Refused { .. }) {
            route.set_secret_tokens(old);
        }
        tracing::warn!(channel = "telegram", route = %bot, error = %e, "setWebhook failed");
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Telegram: {e}"),
        ));
    }
    state
        .registry
        .store
        .put_secret(&route.secret_name, fresh.as_bytes().to_vec())
        .await?;
    route.set_secret_tokens(vec![fresh.into_bytes()]);
    tracing::info!(channel = "telegram", route = %bot, url = request.url, secret = route.secret_name, "webhook set with a fresh secret token");
    Ok(Json(json!({
        "bot": bot,
        "url": request.url,
        "secret": route.secret_name,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_lose_the_bot_name_and_case() {
        assert_eq!(
            command("/Book@HarkBot next friday"),
            Some(("/book".to_owned(), "next friday"))
        );
        assert_eq!(command("/start"), Some(("/start".to_owned(), "")));
        assert_eq!(command("hello /start"), None);
    }

    #[test]
    fn replies_are_send_message_calls_answering_the_message() {
        let call = send_message(42, 7, json!("hi"));
        assert_eq!(call["method"], "sendMessage");
        assert_eq!(call["chat_id"], 42);
        assert_eq!(call["text"], "hi");
        assert_eq!(call["reply_parameters"]["message_id"], 7);
        let own = send_message(
            42,
            7,
            json!({"text": "*hi*", "parse_mode": "MarkdownV2", "chat_id": 5}),
        );
        assert_eq!(own["parse_mode"], "MarkdownV2");
        assert_eq!(own["chat_id"], 5, "the function's chat wins");
    }
}
