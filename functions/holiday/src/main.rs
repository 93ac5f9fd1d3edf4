//! `holiday`: a fork-mode example function behind the `holiday` skill. One call comes in on
//! stdin as the JSON Hark's Alexa channel sends (`input.action` is `balance`, `book` or
//! `cancel`; `input.date` an AMAZON.DATE value; `user.id` the Alexa user); one JSON answer
//! goes out on stdout for the skill's reply templates.
//!
//! State is a stand-in for the real HR site (which the browser automation issue will drive):
//! a JSON file, `$HOLIDAY_STATE` or `holiday-state.json` in the working directory, holding
//! each user's allowance and booked days. A lock file serialises concurrent calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::PathBuf;

use chrono::{Datelike, Local, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Environment variable naming the state file.
const ENV_STATE: &str = "HOLIDAY_STATE";
/// Days off a new user starts with.
const ALLOWANCE: u32 = 25;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    users: BTreeMap<String, Account>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Account {
    allowance: u32,
    booked: BTreeSet<NaiveDate>,
}

impl Account {
    fn days_left(&self) -> u32 {
        self.allowance.saturating_sub(self.booked.len() as u32)
    }
}

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        fail(&format!("cannot read the request: {e}"));
    }
    let request: Value = serde_json::from_str(&input)
        .unwrap_or_else(|e| fail(&format!("the request is not JSON: {e}")));
    let action = request["input"]["action"].as_str().unwrap_or("balance");
    let user = request["user"]["id"]
        .as_str()
        .unwrap_or("anonymous")
        .to_owned();
    let date = request["input"]["date"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let path = std::env::var_os(ENV_STATE)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("holiday-state.json"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .unwrap_or_else(|e| fail(&format!("cannot open the lock file: {e}")));
    lock.lock()
        .unwrap_or_else(|e| fail(&format!("cannot lock the state: {e}")));
    let mut state: State = match File::open(&path) {
        Ok(f) => serde_json::from_reader(f)
            .unwrap_or_else(|e| fail(&format!("{} is corrupt: {e}", path.display()))),
        Err(_) => State::default(),
    };
    let account = state.users.entry(user).or_insert_with(|| Account {
        allowance: ALLOWANCE,
        booked: BTreeSet::new(),
    });
    let today = Local::now().date_naive();
    let answer = match action {
        "balance" => json!({
            "days_left": account.days_left(),
            "booked": account.booked.iter().filter(|d| **d >= today).map(|d| d.to_string()).collect::<Vec<_>>(),
        }),
        "book" | "cancel" => {
            let Ok(day) = NaiveDate::parse_from_str(&date, "%Y-%m-%d") else {
                return print(
                    json!({ "status": "not_a_day", "date": date, "days_left": account.days_left() }),
                );
            };
            let status = if action == "cancel" {
                if account.booked.remove(&day) {
                    "cancelled"
                } else {
                    "not_booked"
                }
            } else if day < today {
                "in_the_past"
            } else if matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
                "weekend"
            } else if account.booked.contains(&day) {
                "already_booked"
            } else if account.days_left() == 0 {
                "none_left"
            } else {
                account.booked.insert(day);
                "booked"
            };
            json!({ "status": status, "date": day.to_string(), "weekday": day.format("%A").to_string(), "days_left": account.days_left() })
        }
        other => fail(&format!("unknown action {other:?}")),
    };
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec_pretty(&state)
        .map_err(|e| e.to_string())
        .and_then(|bytes| std::fs::write(&tmp, bytes).map_err(|e| e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
    if let Err(e) = written {
        fail(&format!("cannot save {}: {e}", path.display()));
    }
    print(answer);
}

fn print(answer: Value) {
    println!("{answer}");
}

fn fail(message: &str) -> ! {
    eprintln!("holiday: {message}");
    std::process::exit(1);
}
