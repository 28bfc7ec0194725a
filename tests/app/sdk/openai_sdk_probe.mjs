// The official OpenAI Node SDK, used exactly as an application would, against
// `embedrt serve` (driven by tests/app/serve_e2e_test.cpp).
//
//   node openai_sdk_probe.mjs BASE_URL TOKEN gateway|unavailable|crowd
//
// Prints one JSON object per line and scenario: {"name", "ok", ...}; for a
// success the vectors as the SDK hands them to the application, for a failure
// the SDK's error class, status, code, type and Retry-After header. No retries
// (maxRetries 0), so every status reaches the caller as the gateway sent it.
import OpenAI from "openai";

const [baseURL, token, mode] = process.argv.slice(2);
if (!baseURL || !token || !["gateway", "unavailable", "crowd"].includes(mode)) {
  console.error(
    "usage: node openai_sdk_probe.mjs BASE_URL TOKEN gateway|unavailable|crowd");
  process.exit(2);
}

const options = { baseURL, maxRetries: 0, timeout: 20000 };
const client = new OpenAI({ apiKey: token, ...options });
const intruder = new OpenAI({ apiKey: "not-the-token", ...options });

async function scenario(name, call) {
  let line;
  try {
    line = { name, ok: true, ...(await call()) };
  } catch (e) {
    line = {
      name,
      ok: false,
      class: e.constructor.name,
      status: e.status ?? null,
      code: e.code ?? null,
      type: e.type ?? null,
      message: e.message ?? "",
      retry_after: e.headers?.get?.("retry-after") ?? null,
    };
  }
  console.log(JSON.stringify(line));
}

const result = (r) => ({
  object: r.object,
  model: r.model,
  usage: r.usage,
  indexes: r.data.map((d) => d.index),
  vectors: r.data.map((d) => Array.from(d.embedding)),
});

async function gateway() {
  // The SDK's default: it asks for base64 and decodes the vectors itself.
  await scenario("default_encoding", async () =>
    result(await client.embeddings.create({
      model: "text-embedding-3-small",
      input: ["sdk one", "sdk two", "sdk three"],
    })));

  await scenario("float_string_dims", async () =>
    result(await client.embeddings.create({
      model: "text-embedding-3-small",
      input: "sdk single",
      dimensions: 8,
      encoding_format: "float",
      user: "user-42",
    })));

  // The raw response too: status and headers as the SDK saw them.
  await scenario("with_response", async () => {
    const { data, response } = await client.embeddings
      .create({ model: "m", input: ["raw"], dimensions: 4 })
      .withResponse();
    return {
      status: response.status,
      content_type: response.headers.get("content-type"),
      vectors: data.data.map((d) => Array.from(d.embedding)),
    };
  });

  await scenario("empty_input", async () =>
    result(await client.embeddings.create({ model: "m", input: [] })));

  await scenario("bad_dimensions", async () =>
    result(await client.embeddings.create({
      model: "m", input: "x", dimensions: -3,
    })));

  await scenario("wrong_token", async () =>
    result(await intruder.embeddings.create({ model: "m", input: "x" })));

  // Over the gateway's body limit (the test starts it with a small one).
  await scenario("too_large", async () =>
    result(await client.embeddings.create({
      model: "m", input: "y".repeat(64 * 1024),
    })));

  // A deadline shorter than the upstream's latency for this input.
  await scenario("deadline", async () =>
    result(await client.embeddings.create(
      { model: "m", input: "slow" },
      { headers: { "x-embedrt-timeout-ms": "50" } })));
}

// An upstream that refuses connections: the first calls fail (502) until the
// gateway knows it is down; from then on it answers 503 with Retry-After.
async function unavailable() {
  let last = null;
  for (let i = 0; i < 30; ++i) {
    try {
      await client.embeddings.create({ model: "m", input: "anyone there" });
      last = { ok: true };
    } catch (e) {
      last = e;
      if (e.status !== 502)
        break;
    }
  }
  await scenario("unavailable", async () => {
    if (last instanceof Error)
      throw last;
    return { note: "no call failed" };
  });
}

// More concurrent calls than one connection and a queue of one can take:
// some succeed, the rest are refused at once with 429 and Retry-After.
async function crowd() {
  await scenario("crowd", async () => {
    const calls = Array.from({ length: 8 }, (_, i) =>
      client.embeddings.create({ model: "m", input: `crowd ${i}`, dimensions: 8 })
        .then(() => ({ status: 200 }), (e) => e));
    let succeeded = 0, overloaded = 0, other = 0, retryAfterOk = true;
    for (const r of await Promise.all(calls)) {
      if (r.status === 200) {
        ++succeeded;
      } else if (r.status === 429 && r.code === "overloaded") {
        ++overloaded;
        const ra = Number(r.headers?.get?.("retry-after"));
        retryAfterOk &&= Number.isFinite(ra) && ra >= 1;
      } else {
        ++other;
      }
    }
    return { succeeded, overloaded, other, retry_after_ok: retryAfterOk };
  });
}

await { gateway, unavailable, crowd }[mode]();
