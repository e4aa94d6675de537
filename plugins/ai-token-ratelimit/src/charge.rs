//! What a finished request spent, from what the plugin saw of its end.

use aigw_shared::estimate::Estimate;
use aigw_shared::usage::TokenCounts;
use serde::Deserialize;

/// What a request whose client left before the response began is charged (`abort_before_response`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbortCharge {
    /// The whole reservation: the provider bills what it generated, which the gateway never saw.
    #[default]
    Reservation,
    /// The prompt estimate only.
    Prompt,
}

/// How a request ended, as far as the plugin saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ending {
    /// The request reached an upstream (Envoy picked a host for it).
    pub forwarded: bool,
    /// Response status; `None` if no response came before the client went away.
    pub status: Option<u16>,
    /// The response arrived whole, rather than being cut off when the client left.
    pub complete: bool,
    /// The usage the provider reported.
    pub reported: Option<TokenCounts>,
    /// Output tokens estimated from the text of a streamed answer.
    pub streamed_output: Option<u64>,
}

/// The tokens to charge for a request that reserved `reserved`:
///
/// - no response: the reservation (or only the prompt, as `before_response` says) once the
///   request was sent upstream, nothing otherwise;
/// - an error status: nothing;
/// - usage that is not a count: the reservation;
/// - usage reported: that, or when the client left mid-stream the larger of it and the prompt
///   plus the text streamed so far (the usage seen may predate the end);
/// - no usage: the prompt plus the streamed text, or for an answer that was not streamed the
///   reservation.
pub fn charge(reserved: &Estimate, ending: &Ending, before_response: AbortCharge) -> u64 {
    let Some(status) = ending.status else {
        return match (ending.forwarded, before_response) {
            (false, _) => 0,
            (true, AbortCharge::Reservation) => reserved.total(),
            (true, AbortCharge::Prompt) => reserved.prompt,
        };
    };
    if status >= 400 {
        return 0;
    }
    let streamed = ending
        .streamed_output
        .map(|output| reserved.prompt.saturating_add(output));
    match ending.reported {
        Some(usage) if usage.malformed => reserved.total(),
        Some(usage) if ending.complete => usage.total,
        Some(usage) => usage.total.max(streamed.unwrap_or(0)),
        None => streamed.unwrap_or_else(|| reserved.total()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESERVED: Estimate = Estimate {
        prompt: 10,
        output: 100,
    };

    fn answered(reported: Option<TokenCounts>, streamed_output: Option<u64>) -> Ending {
        Ending {
            forwarded: true,
            status: Some(200),
            complete: true,
            reported,
            streamed_output,
        }
    }

    fn charged(ending: &Ending) -> u64 {
        charge(&RESERVED, ending, AbortCharge::Reservation)
    }

    #[test]
    fn usage_wins_over_the_estimates() {
        let usage = TokenCounts::new(30, 12, 0);
        assert_eq!(charged(&answered(Some(usage), Some(5))), 42);
        assert_eq!(charged(&answered(Some(usage), None)), 42);
    }

    #[test]
    fn no_usage_charges_the_prompt_and_the_streamed_text() {
        assert_eq!(
            charged(&answered(None, Some(1000))),
            1010,
            "more than reserved"
        );
        assert_eq!(charged(&answered(None, Some(5))), 15);
        assert_eq!(
            charged(&answered(None, None)),
            110,
            "nothing known: the reservation"
        );
    }

    #[test]
    fn malformed_usage_charges_the_reservation() {
        let mut usage = TokenCounts::new(0, 0, 0);
        usage.malformed = true;
        assert_eq!(charged(&answered(Some(usage), Some(5))), 110);
    }

    #[test]
    fn provider_errors_cost_nothing() {
        let failed = Ending {
            status: Some(503),
            ..answered(None, None)
        };
        assert_eq!(charged(&failed), 0);
    }

    #[test]
    fn aborts_before_the_response_charge_the_reservation_or_the_prompt() {
        let abandoned = Ending {
            forwarded: true,
            ..Ending::default()
        };
        assert_eq!(charged(&abandoned), 110);
        assert_eq!(charge(&RESERVED, &abandoned, AbortCharge::Prompt), 10);
        assert_eq!(charged(&Ending::default()), 0, "never forwarded: released");
    }

    #[test]
    fn aborts_mid_stream_charge_the_larger_of_usage_and_text_so_far() {
        let cut = |reported, streamed| Ending {
            complete: false,
            ..answered(reported, Some(streamed))
        };
        assert_eq!(charged(&cut(None, 40)), 50);
        // Anthropic-style usage at the start of a stream says little about its end.
        assert_eq!(charged(&cut(Some(TokenCounts::new(10, 1, 0)), 40)), 50);
        assert_eq!(charged(&cut(Some(TokenCounts::new(10, 90, 0)), 40)), 100);
        let json_cut = Ending {
            complete: false,
            ..answered(None, None)
        };
        assert_eq!(
            charged(&json_cut),
            110,
            "a JSON answer cut off: the reservation"
        );
    }

    #[test]
    fn huge_estimates_do_not_wrap() {
        let huge = Estimate {
            prompt: u64::MAX,
            output: u64::MAX,
        };
        assert_eq!(huge.total(), u64::MAX);
        let ending = Ending {
            complete: false,
            ..answered(None, Some(u64::MAX))
        };
        assert_eq!(charge(&huge, &ending, AbortCharge::Reservation), u64::MAX);
    }
}
