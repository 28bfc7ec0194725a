// The Vercel AI SDK (`embed`/`embedMany` of `ai` with @ai-sdk/openai and
// @ai-sdk/openai-compatible) and LlamaIndex TS (`OpenAIEmbedding` of
// @llamaindex/openai), used as applications use them, against `embedrt
// serve` (driven by tests/app/serve_clients_test.cpp).
//
//   node frameworks_probe.mjs BASE_URL TOKEN gateway|crowd|refused
//
// Prints one JSON object per line and scenario: {"name", "ok", ...} with the
// vectors the library handed back (and the usage where it shows it), or the
// error's class, status, retryability and message.
import { embed, embedMany } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { OpenAIEmbedding } from "@llamaindex/openai";

const [baseURL, token, mode] = process.argv.slice(2);
if (!baseURL || !token || !mode) {
  console.error("usage: node frameworks_probe.mjs BASE_URL TOKEN gateway|crowd|refused");
  process.exit(2);
}

// The AI SDK wraps a failed call in RetryError when it retried; the last
// APICallError is what the gateway answered.
function apiError(e) {
  if (e?.lastError)
    return e.lastError;
  return e;
}

async function scenario(name, call) {
  let line;
  try {
    line = { name, ok: true, ...(await call()) };
  } catch (caught) {
    const e = apiError(caught);
    line = {
      name,
      ok: false,
      class: e.constructor.name,
      outer: caught.constructor.name,
      status: e.statusCode ?? e.status ?? null,
      retryable: e.isRetryable ?? null,
      retry_after: e.responseHeaders?.["retry-after"] ?? null,
      message: e.message ?? "",
    };
  }
  console.log(JSON.stringify(line));
}

const model = "text-embedding-3-small";
const openai = createOpenAI({ baseURL, apiKey: token });
// What users pick for vLLM, Ollama or TEI behind an OpenAI-style /v1.
const compatible = createOpenAICompatible({ name: "embedrt", baseURL, apiKey: token });
const dims8 = { openai: { dimensions: 8 } };

async function gateway() {
  await scenario("vercel_embed_many", async () => {
    const r = await embedMany({
      model: openai.embedding(model),
      values: ["vercel one", "vercel two", "vercel three"],
      providerOptions: dims8,
      maxRetries: 0,
    });
    return { vectors: r.embeddings, tokens: r.usage.tokens };
  });

  await scenario("vercel_embed", async () => {
    const r = await embed({
      model: openai.embedding(model),
      value: "vercel single",
      providerOptions: dims8,
      maxRetries: 0,
    });
    return { vectors: [r.embedding], tokens: r.usage.tokens };
  });

  // More values than one call may carry (2,048): the SDK splits them into
  // three calls, two at a time, and puts the vectors back in order.
  await scenario("vercel_split", async () => {
    const values = Array.from({ length: 5000 }, (_, i) => `split ${i}`);
    const r = await embedMany({
      model: openai.embedding(model),
      values,
      providerOptions: dims8,
      maxParallelCalls: 2,
      maxRetries: 0,
    });
    const at = [0, 2047, 2048, 4095, 4096, 4999];
    return {
      count: r.embeddings.length,
      at,
      vectors: at.map((i) => r.embeddings[i]),
      tokens: r.usage.tokens,
    };
  });

  await scenario("vercel_compatible", async () => {
    const r = await embedMany({
      model: compatible.embeddingModel(model),
      values: ["compatible one", "compatible two"],
      providerOptions: { embedrt: { dimensions: 8 } },
      maxRetries: 0,
    });
    return { vectors: r.embeddings, tokens: r.usage?.tokens ?? null };
  });

  await scenario("vercel_empty", async () => {
    await embed({ model: openai.embedding(model), value: "", maxRetries: 0 });
    return {};
  });

  await scenario("vercel_wrong_token", async () => {
    const other = createOpenAI({ baseURL, apiKey: "not-the-token" });
    await embed({ model: other.embedding(model), value: "x", maxRetries: 0 });
    return {};
  });

  // LlamaIndex TS: its default batch size (10) splits a document list into
  // calls made one after the other.
  const llama = new OpenAIEmbedding({
    model,
    dimensions: 8,
    apiKey: token,
    additionalSessionOptions: { baseURL, maxRetries: 0 },
  });

  await scenario("llamaindex_documents", async () => ({
    vectors: await llama.getTextEmbeddingsBatch(
      Array.from({ length: 25 }, (_, i) => `llama doc ${i}`)),
  }));

  await scenario("llamaindex_query", async () => ({
    vectors: [await llama.getQueryEmbedding({ type: "text", text: "llama query" })],
  }));
}

// Five calls at once at a gateway with one connection and a queue of one, the
// SDK's retries left at their default (2): the calls it refuses (429,
// Retry-After) are retried after the time the gateway asked for, and all end
// with a vector.
async function crowd() {
  await scenario("vercel_crowd", async () => {
    const started = Date.now();
    const calls = Array.from({ length: 5 }, (_, i) =>
      embed({ model: openai.embedding(model), value: `crowd ${i}`, providerOptions: dims8 }));
    const results = await Promise.all(calls);
    return {
      vectors: results.map((r) => r.embedding),
      elapsed_ms: Date.now() - started,
    };
  });
}

// The same without retries: a refusal reaches the application.
async function refused() {
  await scenario("vercel_crowd_no_retries", async () => {
    const calls = Array.from({ length: 5 }, (_, i) =>
      embed({ model: openai.embedding(model), value: `no retry ${i}`, providerOptions: dims8, maxRetries: 0 })
        .then(() => null, (e) => e));
    for (const e of await Promise.all(calls))
      if (e)
        throw e;
    return { note: "no call was refused" };
  });
}

await { gateway, crowd, refused }[mode]();
