use super::{RateLimiter, Refused};
use crate::config::Limits;

#[test]
fn rpm_refuses_with_retry_after() {
    let l = RateLimiter::default();
    let limits = Limits { rpm: Some(2), ..Limits::default() };
    drop(l.admit("a", limits, 0, 1).expect("first"));
    drop(l.admit("a", limits, 0, 2).expect("second"));
    let refused = l.admit("a", limits, 0, 3).expect_err("third");
    assert!(matches!(refused, Refused::Wait { retry_after, .. } if (1..=60).contains(&retry_after)), "{refused:?}");
    // Another agent has its own window.
    assert!(l.admit("b", limits, 0, 4).is_ok());
}

#[test]
fn concurrency_slot_is_freed_on_drop() {
    let l = RateLimiter::default();
    let limits = Limits { concurrent: Some(1), ..Limits::default() };
    let slot = l.admit("a", limits, 0, 1).expect("first");
    assert!(l.admit("a", limits, 0, 2).is_err());
    drop(slot);
    assert!(l.admit("a", limits, 0, 3).is_ok());
}

#[test]
fn tpm_counts_actual_tokens_after_release() {
    let l = RateLimiter::default();
    let limits = Limits { tpm: Some(100), ..Limits::default() };
    l.admit("a", limits, 90, 1).expect("first").release(10);
    assert!(l.admit("a", limits, 90, 2).is_ok());
    assert!(l.admit("a", limits, 90, 3).is_err());
}

#[test]
fn unset_limits_keep_no_history() {
    let l = RateLimiter::default();
    for id in 0..1000 {
        l.admit("a", Limits { concurrent: Some(4), ..Limits::default() }, 50, id).expect("admitted").release(10);
    }
    let agents = l.agents.lock().expect("lock");
    assert!(agents["a"].requests.is_empty() && agents["a"].tokens.is_empty());
    assert_eq!(agents["a"].in_flight, 0);
}

#[test]
fn a_request_over_the_whole_tpm_is_refused_for_good() {
    let l = RateLimiter::default();
    let limits = Limits { tpm: Some(1000), ..Limits::default() };
    assert_eq!(l.admit("a", limits, 1001, 1).expect_err("over"), Refused::Never { needs: 1001, tpm: 1000 });
    assert!(l.admit("a", limits, 1000, 2).is_ok(), "the refusal took none of the minute");
}
