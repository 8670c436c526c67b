// CartFlow's reference storefront: one ES module, no framework, no build step (docs/storefront.md).
//
// The purchase, as the HTTP API (docs/api.md) has it:
//   GET /api/products → cart writes (X-Cart-Token, If-Match) → POST /api/checkout/start (the stock is held;
//   no Stripe call yet) → POST /api/checkout/confirm (creates and confirms the PaymentIntent) → 3-D Secure
//   when asked → GET /api/checkout/{id} until Stripe's webhook has settled it → GET /api/orders/{id}.
// Every error shown to the shopper is the API's RFC 9457 problem: its title, detail and Retry-After.

const params = new URLSearchParams(location.search);
// ?api=http://host:port: the API of another origin (it must allow this page's origin, CORS); else this one's.
const API = (params.get("api") || location.origin).replace(/\/+$/, "");
const POLL_MS = Number(params.get("poll")) || 3000; // how often the catalog and the cart are re-read (refresh)
const KEYS = { token: "cartflow.cartToken", checkout: "cartflow.checkout" }; // localStorage, kept across reloads

const $ = (id) => document.getElementById(id);
let products = []; // GET /api/products results
let cart = null; // the last cart response
let etag = null; // its ETag ("<version>"), sent back as If-Match on the next write
let checkout = null; // the open checkout: {checkoutId, orderId, amount, currency, reservationExpiresAt, ...}
let queue = null; // a flash-sale queue ticket: {sku, ticket, position, admitted}
let stripe = null; // Stripe.js and its Elements, only with a publishable key (config.json)
let elements = null;

// --- talking to the API ---------------------------------------------------------------------------------

/** An RFC 9457 problem answered by the API (or a network failure dressed as one). */
class Problem extends Error {
  constructor(status, body, retryAfter = 0) {
    body ||= { title: `HTTP ${status}`, detail: "The answer was not a problem document." }; // e.g. a proxy's page
    super(body.detail);
    Object.assign(this, { status, body, retryAfter, code: body.code });
  }
  toString() {
    return `${this.body.title}: ${this.body.detail}` + (this.retryAfter ? ` Retry in ${this.retryAfter} s.` : "");
  }
}

async function api(method, path, { body, headers = {} } = {}) {
  const token = localStorage.getItem(KEYS.token);
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (token) init.headers["X-Cart-Token"] = token; // the header, not the cookie: it works from any origin
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`${API}/api${path}`, init);
  } catch {
    throw new Problem(0, { title: "Network error", detail: `The API at ${API} cannot be reached.` });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Problem(response.status, data, Number(response.headers.get("Retry-After")) || 0);
  return { status: response.status, data, headers: response.headers };
}

function say(text, kind = "info") {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
}

const sayProblem = (problem, extra = "") => say(String(problem) + extra, "error");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Minor units as the currency writes them: 6200 cents are $62.00, 1800 yen are ¥1,800 (yen have no minor
 * unit), 1500 fils are KWD 1.500. Intl knows each currency's number of decimals (ISO 4217). */
const money = (amount, currency) => {
  const format = new Intl.NumberFormat("en", { style: "currency", currency: currency.toUpperCase() });
  return format.format(amount / 10 ** format.resolvedOptions().maximumFractionDigits);
};

const price = (amount, currency) => el("span", { class: "price" }, money(amount, currency));

/** document.createElement with attributes (on* are listeners) and children. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value != null) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// --- catalog ---------------------------------------------------------------------------------------------

async function refreshProducts() {
  try {
    products = (await api("GET", "/products")).data.results;
  } catch (problem) {
    return sayProblem(problem);
  }
  $("products").replaceChildren(
    ...products.map((p) =>
      el(
        "li",
        { "data-test": `product-${p.id}`, class: p.available > 0 ? "product" : "product sold-out" },
        el("span", { class: "name" }, p.name, p.flashSale ? el("span", { class: "badge" }, "Flash sale") : ""),
        price(p.price, p.currency),
        el("span", { "data-test": `available-${p.id}` }, p.available > 0 ? `${p.available} left` : "Sold out"),
        el("button", { "data-test": `add-${p.id}`, disabled: p.available <= 0, onclick: () => add(p.id) }, "Add"),
      ),
    ),
  );
}

// --- cart: every write sends If-Match, so a change made elsewhere (another tab) is never overwritten --------

function showCart(response) {
  cart = response.data;
  // The ETag is "<version>". From another origin a script reads it only where CORS exposes it: else the body's.
  etag = response.headers.get("ETag") || `"${cart.version}"`;
  if (cart.token) localStorage.setItem(KEYS.token, cart.token); // the first write mints the token
  $("cart-lines").replaceChildren(
    ...cart.items.map((item) =>
      el(
        "li",
        { "data-test": `line-${item.productId}` },
        el("span", { class: "name" }, item.name),
        el("button", { "data-test": `dec-${item.productId}`, onclick: () => setQuantity(item, -1) }, "−"),
        el("output", { "data-test": `qty-${item.productId}` }, String(item.quantity)),
        el("button", { "data-test": `inc-${item.productId}`, onclick: () => setQuantity(item, +1) }, "+"),
        price(item.lineTotal, cart.currency),
      ),
    ),
  );
  $("subtotal").textContent = cart.items.length ? money(cart.subtotal, cart.currency) : "–";
  $("checkout-button").disabled = !cart.items.length || checkout !== null;
}

const refreshCart = async () => showCart(await api("GET", "/cart"));
// The catalog and the cart are re-read every POLL_MS: availability moves as others buy, and the cart shows
// that fulfilment emptied it after an order.
const refresh = () => Promise.all([refreshProducts(), refreshCart().catch(sayProblem)]);

async function cartWrite(method, path, body) {
  try {
    showCart(await api(method, path, { body, headers: etag ? { "If-Match": etag } : {} }));
    return true;
  } catch (problem) {
    sayProblem(problem); // e.g. insufficient_stock, or cart_version_conflict: the cart changed elsewhere
    if (problem.code === "cart_version_conflict") await refreshCart(); // show what it is now; try again
    return false;
  }
}

async function add(productId) {
  if (await cartWrite("POST", "/cart/items", { productId, quantity: 1 })) say("Added to the cart.");
}

async function setQuantity(item, delta) {
  // PUT sets the line's quantity; 0 removes the line.
  await cartWrite("PUT", `/cart/items/${item.productId}`, { quantity: item.quantity + delta });
}

// --- checkout: reserve, pay, authenticate, settle ----------------------------------------------------------

function showCheckout(data) {
  checkout = data;
  localStorage.setItem(KEYS.checkout, JSON.stringify(data)); // a reload (or 3-D Secure's return) finds it
  $("checkout").hidden = false;
  $("checkout-amount").textContent = money(data.amount, data.currency);
  $("checkout-button").disabled = true;
  tick();
  if (stripe && !elements) mountPaymentElement(data);
}

function closeCheckout() {
  checkout = null;
  elements = null;
  localStorage.removeItem(KEYS.checkout);
  $("checkout").hidden = true;
  $("checkout-button").disabled = !cart?.items.length;
}

/** The reservation countdown: past reservationExpiresAt the API answers reservation_expired. */
function tick() {
  if (!checkout?.reservationExpiresAt) return;
  const left = Math.max(0, Math.round((Date.parse(checkout.reservationExpiresAt) - Date.now()) / 1000));
  $("countdown").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
}

async function startCheckout() {
  const headers = queue?.ticket ? { "Flash-Ticket": queue.ticket } : {};
  try {
    showCheckout((await api("POST", "/checkout/start", { body: {}, headers })).data);
    queue = null;
    say("The stock is held for you: pay before the countdown ends.");
    refreshProducts(); // what this checkout holds is no longer available to others
  } catch (problem) {
    if (problem.code === "flash_sale_busy") return waitInQueue(problem);
    queue = null;
    sayProblem(problem); // sold_out, insufficient_stock, cart_empty, ...
    refreshProducts();
  }
}

// flash_sale_busy: every unit left is held by checkouts in progress, one of which may still give it back.
// Hold a place in the product's fair queue (POST /api/flash-sales/{sku}/queue) and start again with the
// ticket after Retry-After: the ticket is let in first-come first-served, or hears sold_out once none is left.
async function waitInQueue(busy) {
  try {
    if (queue) {
      Object.assign(queue, (await api("GET", `/flash-sales/${queue.sku}/queue/${queue.ticket}`)).data);
    } else {
      const sku = products.find((p) => p.id === busy.body.productId)?.sku;
      if (sku) queue = { sku, ...(await api("POST", `/flash-sales/${encodeURIComponent(sku)}/queue`)).data };
    }
  } catch (problem) {
    queue = null;
    return sayProblem(problem); // sold_out, or the ticket lapsed
  }
  sayProblem(busy, queue ? ` You are number ${queue.position} in the queue.` : "");
  setTimeout(startCheckout, (busy.retryAfter || 2) * 1000);
}

/** This page's address with ?api= (when given) and ``extra`` query parameters. */
function pageUrl(extra = {}) {
  const query = new URLSearchParams({ ...(params.has("api") && { api: API }), ...extra }).toString();
  return `${location.origin}${location.pathname}${query ? `?${query}` : ""}`;
}

const returnUrl = () => pageUrl(); // Stripe adds ?payment_intent=…&redirect_status=… when it sends the shopper back

async function pay() {
  const body = { checkoutId: checkout.checkoutId };
  if (stripe) {
    // Deferred intent: the Payment Element's card becomes a ConfirmationToken; the server confirms with it.
    const { error: incomplete } = await elements.submit();
    if (incomplete) return say(incomplete.message, "error");
    const { error, confirmationToken } = await stripe.createConfirmationToken({
      elements,
      params: { return_url: returnUrl() },
    });
    if (error) return say(error.message, "error");
    body.confirmationToken = confirmationToken.id;
  } else {
    body.paymentMethodId = $("card").value;
    body.returnUrl = returnUrl(); // where the emulator's 3-D Secure page sends the shopper back
  }
  $("pay-button").disabled = true;
  say("Paying…");
  try {
    const { status, data } = await api("POST", "/checkout/confirm", { body });
    if (status === 202) return await authenticate(data); // requires_action: 3-D Secure
    await finish(data);
  } catch (problem) {
    sayProblem(problem); // payment_declined: the checkout stays open, pick another card
    if (["reservation_expired", "checkout_not_confirmable"].includes(problem.code)) closeCheckout();
  } finally {
    $("pay-button").disabled = false;
  }
}

async function authenticate(data) {
  if (stripe) {
    // Stripe.js shows the bank's challenge in the page; the outcome reaches CartFlow by webhook.
    const { error } = await stripe.handleNextAction({ clientSecret: data.paymentClientSecret });
    if (error) say(error.message, "error");
    return settle({ wait: true });
  }
  const redirect = data.nextAction?.redirect_to_url;
  if (!redirect) return say("This card needs an authentication step that only Stripe.js can show.", "error");
  say("Your bank asks you to confirm the payment…");
  location.assign(redirect.url); // the emulator's challenge page; it comes back to returnUrl()
}

/** Where the open checkout stands (GET /api/checkout/{id}). After 3-D Secure (``wait``) the webhook, not this
 * page, tells CartFlow the outcome: follow the checkout until it has. */
async function settle({ wait = false } = {}) {
  if (wait) say("Waiting for the payment to settle…");
  for (let i = 0; i < 90; i++) {
    let data;
    try {
      data = (await api("GET", `/checkout/${checkout.checkoutId}`)).data;
    } catch (problem) {
      closeCheckout(); // checkout_not_found: another cart token, or long gone
      return sayProblem(problem);
    }
    if (["confirmed", "fulfilled"].includes(data.status)) return finish(data);
    if (["failed", "expired", "cancelled"].includes(data.status)) {
      closeCheckout();
      return say(`The checkout is ${data.status}: nothing was charged, or it was refunded.`, "error");
    }
    const open = data.status === "awaiting_payment" || (data.status === "requires_action" && !wait);
    if (open) {
      showCheckout(data);
      if (!data.lastErrorCode) return say("Your checkout is open: pay before the countdown ends.");
      return say(`The payment did not go through (${data.lastErrorCode}): try another card.`, "error");
    }
    await sleep(1000); // requires_action or paid: the webhook is on its way
  }
  say("The payment has not settled yet: reload the page in a moment.", "error");
}

async function cancelCheckout() {
  try {
    await api("POST", `/checkout/${checkout.checkoutId}/cancel`);
    closeCheckout();
    say("Checkout cancelled: the stock is released.");
    refreshProducts();
  } catch (problem) {
    sayProblem(problem);
  }
}

async function finish(data) {
  closeCheckout();
  history.replaceState(null, "", pageUrl({ order: data.orderId })); // a reload shows the order again
  await showOrder(data.orderId);
  await refresh();
}

// --- the order page ---------------------------------------------------------------------------------------

async function showOrder(orderId) {
  let order;
  try {
    order = (await api("GET", `/orders/${encodeURIComponent(orderId)}`)).data;
  } catch (problem) {
    return sayProblem(problem);
  }
  $("order").hidden = false;
  $("order-id").textContent = order.orderId;
  $("order-status").textContent = order.status;
  $("order-payment").textContent = order.paymentStatus;
  const cur = order.currency;
  $("order-total").textContent = money(order.total, cur);
  $("order-lines").replaceChildren(
    ...order.lines.map((line) =>
      el("li", {}, el("span", { class: "name" }, `${line.quantity} × ${line.name}`), price(line.lineTotal, cur)),
    ),
  );
  // "fulfilled" is CartFlow's next step (handed to fulfilment): to the shopper the order is confirmed either way.
  if (["confirmed", "fulfilled"].includes(order.status)) say(`Thank you: your order ${order.orderId} is confirmed.`);
  else say(`Order ${order.orderId} is ${order.status}.`);
}

function shopAgain() {
  $("order").hidden = true;
  history.replaceState(null, "", pageUrl());
  say("");
}

// --- Stripe.js, only with STRIPE_PUBLISHABLE_KEY -----------------------------------------------------------

async function loadStripe(publishableKey) {
  // Stripe.js is always loaded from js.stripe.com (Stripe requires it); never bundled, never in emulator mode.
  await new Promise((resolve, reject) =>
    document.head.append(el("script", { src: "https://js.stripe.com/v3/", onload: resolve, onerror: reject })),
  );
  stripe = window.Stripe(publishableKey);
  $("card-picker").hidden = true;
  $("payment-element").hidden = false;
}

function mountPaymentElement(data) {
  // The deferred-intent flow: the Element knows the amount, no PaymentIntent exists until the shopper pays.
  const options = { mode: "payment", amount: data.amount, currency: data.currency, paymentMethodTypes: ["card"] };
  elements = stripe.elements(options);
  elements.create("payment").mount("#payment-element");
}

// --- start -------------------------------------------------------------------------------------------------

async function main() {
  $("api-base").textContent = API;
  $("checkout-button").addEventListener("click", startCheckout);
  $("pay-button").addEventListener("click", pay);
  $("cancel-button").addEventListener("click", cancelCheckout);
  $("shop-again").addEventListener("click", shopAgain);
  // config.json sits beside this page (/shop/config.json when CartFlow serves it); none means the emulator.
  const config = await fetch("config.json").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  if (config.stripePublishableKey) await loadStripe(config.stripePublishableKey);
  await refresh();
  const saved = JSON.parse(localStorage.getItem(KEYS.checkout) || "null");
  if (params.has("order")) {
    await showOrder(params.get("order"));
  } else if (saved) {
    // Back from 3-D Secure (Stripe added ?redirect_status=…), or a reload during checkout.
    const returning = params.has("redirect_status");
    if (returning) history.replaceState(null, "", pageUrl()); // drop the client secret from the address bar
    checkout = saved;
    await settle({ wait: returning });
  }
  setInterval(refresh, POLL_MS);
  setInterval(tick, 1000);
}

main();
