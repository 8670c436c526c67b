"""The checkout saga: one run per checkout, persisted step by step so a crash anywhere can be finished or undone.

    step                   side effect                          compensation
    ---------------------  -----------------------------------  ------------------------------------------
    reserve                hold stock for every line            release        (HELD → RELEASED/EXPIRED)
    create_order           Order + OrderLines (same statement   cancel_order   (order cancelled; payments told)
                           as "done")
                           — the start ends here, awaiting_payment: no Stripe call —
    create_payment_intent  (only for ``/payment-intent``: the   cancel_payment_intent (only if one exists)
                           storefront confirms with Stripe.js)
                           the order's one PI, unconfirmed
    charge                 attempt 1 without an intent: create  refund         (when the PI had succeeded)
                           AND confirm the order's one PI in    cancel_payment_intent (an authorization,
                           one call; otherwise confirm that PI  requires_capture: voided, nothing refunded)
    confirm                commit the hold, order confirmed,    —  (a confirmed order is never compensated)
                           outbox event order.confirmed
    capture                (outbox consumer, manual capture     —  (refused: the order waits for staff)
                           only) take the authorized money
    fulfil                 (outbox consumer) order fulfilled,   —
                           cart cleared, order.confirmed logged

The package, in the order a reader needs it (callers import from the module that defines a name; this
file imports nothing, so the modules may import each other through the package without a circle):

    driver.py          the entry points, each the list of steps it runs, and compensation
    steps.py           each step beside its undo
    payment_steps.py   the steps that call Stripe, each beside its undo, and how a charge's outcome is applied
    intent_outcome.py  what a PaymentIntent's state means for a checkout (the one place that decides)
    authorizations.py  the beat task that captures or voids authorizations left uncaptured too long
    listeners.py       what inventory (hold expired, keep the hold?) and payments (an intent changed) call
    lease.py           one process drives a saga at a time
    stuck.py           which sagas are stuck (what recovery resumes), why, and since when (the admin's list)
    persistence.py     every write: one version-checked statement, with the step's order and outbox writes
    insertion.py       the saga's birth: one INSERT with its first log rows and the hold caps' guard
    crashpoints.py     where tests make the process die

Rules every step follows:

- Persist "about to" (``step_status = about_to``) before the side effect, "done" after it; each is a
  version-checked UPDATE (``WHERE version = ?``) plus its SagaStep log rows in ONE statement, which may
  carry the step's own writes (the order, the outbox event), done only if the version matched. Where one
  step's "done" is followed at once by the next step's "about to", both ride in one write (the saga is
  inserted already "about to reserve"; "reserve done" is written with the order, which ends the start in
  ``awaiting_payment``; "charge done" carries "about to confirm"), and the last write of a request also
  releases the lease: fewer statements, same rule. (A crash between the reserve and the order leaves
  "about to reserve": reserving again for the same holder holds nothing twice.)
- A process drives a saga only while it holds the saga's lease; a lost version check raises
  :class:`~orders.errors.CheckoutInProgress`: two processes never both drive one saga.
- Never a Stripe or Redis call inside a database transaction.
- A Stripe outcome that is unknown (timeout, lost response) makes the step ``indeterminate``; only the
  PaymentIntent as Stripe has it settles it. An order has at most one PaymentIntent: while a create may
  have reached Stripe (``create_payment_intent`` or a first ``charge`` not settled), nothing creates
  another; the same create is replayed with the same idempotency key (and, for a create-and-confirm, the
  same ``charge_params``), which returns the intent the first one made.
- :class:`~payments.errors.PaymentProviderBusy` (the shared Stripe budget had no token) means nothing
  was sent: the step is marked failed with no decline and no compensation, the checkout stays open.
- Compensation runs in reverse order and every undo is safe to run twice; before refunding it re-reads
  the saga in case another attempt already completed the order.
- A crash leaves the lease to lapse; ``recover_sagas`` (``saga_recover``) resumes from what was
  persisted: it re-runs idempotent steps, asks Stripe for the truth, then finishes or compensates.
"""
