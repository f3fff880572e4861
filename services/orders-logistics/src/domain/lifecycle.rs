//! The order lifecycle: `pending_payment -> paid -> shipped -> delivered -> completed`,
//! `cancelled` before shipping, and returns after delivery
//! (`return_requested -> return_received -> refunded`, again for a further partial
//! return).

/// The state of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    PendingPayment,
    Paid,
    Shipped,
    Delivered,
    Completed,
    Cancelled,
    ReturnRequested,
    ReturnReceived,
    Refunded,
}

impl State {
    pub const ALL: [State; 9] = [
        State::PendingPayment,
        State::Paid,
        State::Shipped,
        State::Delivered,
        State::Completed,
        State::Cancelled,
        State::ReturnRequested,
        State::ReturnReceived,
        State::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::ReturnRequested => "return_requested",
            Self::ReturnReceived => "return_received",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Delivered at some point: returns and ratings are possible.
    pub fn was_delivered(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Completed | Self::ReturnRequested | Self::ReturnReceived | Self::Refunded
        )
    }
}

/// What someone wants to do with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pay,
    Cancel,
    Ship,
    Track,
    Deliver,
    Complete,
    RequestReturn,
    ReceiveReturn,
    Refund,
    Rate,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Self::Pay => "paid",
            Self::Cancel => "cancelled",
            Self::Ship => "shipped",
            Self::Track => "tracked",
            Self::Deliver => "delivered",
            Self::Complete => "completed",
            Self::RequestReturn => "returned",
            Self::ReceiveReturn => "received back",
            Self::Refund => "refunded",
            Self::Rate => "rated",
        }
    }
}

/// The state after `action`, or why it is not allowed in `state`.
pub fn next(state: State, action: Action) -> Result<State, String> {
    use Action as A;
    use State as S;
    let to = match (action, state) {
        (A::Pay, S::PendingPayment) => S::Paid,
        (A::Cancel, S::PendingPayment | S::Paid) => S::Cancelled,
        (A::Ship, S::Paid) => S::Shipped,
        (A::Track, S::Shipped) => S::Shipped,
        (A::Deliver, S::Shipped) => S::Delivered,
        (A::Complete, S::Delivered) => S::Completed,
        (A::RequestReturn, S::Delivered | S::Completed | S::Refunded) => S::ReturnRequested,
        (A::ReceiveReturn, S::ReturnRequested) => S::ReturnReceived,
        (A::Refund, S::ReturnReceived) => S::Refunded,
        (A::Rate, s) if s.was_delivered() => s,
        (action, state) => {
            return Err(format!(
                "an order that is {} cannot be {}",
                state.as_str().replace('_', " "),
                action.describe()
            ));
        }
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIONS: [Action; 10] = [
        Action::Pay,
        Action::Cancel,
        Action::Ship,
        Action::Track,
        Action::Deliver,
        Action::Complete,
        Action::RequestReturn,
        Action::ReceiveReturn,
        Action::Refund,
        Action::Rate,
    ];

    #[test]
    fn the_happy_path_and_returns() {
        let mut s = State::PendingPayment;
        for a in [
            Action::Pay,
            Action::Ship,
            Action::Track,
            Action::Deliver,
            Action::Complete,
            Action::RequestReturn,
            Action::ReceiveReturn,
            Action::Refund,
            Action::RequestReturn,
        ] {
            s = next(s, a).unwrap();
        }
        assert_eq!(s, State::ReturnRequested);
    }

    #[test]
    fn illegal_transitions_are_refused() {
        for (state, action) in [
            (State::Paid, Action::Pay),
            (State::PendingPayment, Action::Ship),
            (State::Paid, Action::RequestReturn),
            (State::Shipped, Action::Cancel),
            (State::Cancelled, Action::Pay),
            (State::PendingPayment, Action::Rate),
            (State::ReturnRequested, Action::RequestReturn),
        ] {
            assert!(next(state, action).is_err(), "{state:?} {action:?}");
        }
    }

    #[test]
    fn a_cancelled_order_allows_nothing_and_every_state_round_trips() {
        for a in ACTIONS {
            assert!(next(State::Cancelled, a).is_err());
        }
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }
}
