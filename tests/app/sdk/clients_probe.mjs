// LangChain JS (`OpenAIEmbeddings` of @langchain/openai) and the OpenAI Node
// SDK's token-array inputs, used as applications use them, against
// `embedrt serve` (driven by tests/app/serve_clients_test.cpp).
//
//   node clients_probe.mjs BASE_URL TOKEN
//
// Prints one JSON object per line and scenario: {"name", "ok", ...} with the
// vectors the library handed back (and the usage where the SDK shows it), or
// the error's class, status, code and param.
import { OpenAIEmbeddings } from "@langchain/openai";
import OpenAI from "openai";

const [baseURL, token] = process.argv.slice(2);
if (!baseURL || !token) {
  console.error("usage: node clients_probe.mjs BASE_URL TOKEN");
  process.exit(2);
}

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
      param: e.param ?? null,
      message: e.message ?? "",
    };
  }
  console.log(JSON.stringify(line));
}

// LangChain's defaults, except the endpoint, no retries and 8 dimensions;
// a batch size of 3 makes embedDocuments send several requests at once.
const langchain = new OpenAIEmbeddings({
  model: "text-embedding-3-small",
  dimensions: 8,
  batchSize: 3,
  maxRetries: 0,
  apiKey: token,
  configuration: { baseURL },
});

// stripNewLines (its default) turns "\n" into " ": white space alone must
// not fail the whole batch.
await scenario("langchain_documents", async () => ({
  vectors: await langchain.embedDocuments([
    "langchain one", "\n", "two\nlines", " \t ", "langchain five",
  ]),
}));

await scenario("langchain_query", async () => ({
  vector: await langchain.embedQuery("what is\nembedrt"),
}));

const client = new OpenAI({ apiKey: token, baseURL, maxRetries: 0 });

const result = (r) => ({
  model: r.model,
  usage: r.usage,
  vectors: r.data.map((d) => Array.from(d.embedding)),
});

// What Python LangChain sends by default: tiktoken ids, several inputs.
await scenario("token_arrays", async () =>
  result(await client.embeddings.create({
    model: "text-embedding-3-small",
    input: [[9906, 1917], [40, 1093, 1521, 13]],
    dimensions: 8,
    encoding_format: "float",
  })));

// One input as a flat array of ids, base64 (the SDK's default).
await scenario("token_array_single", async () =>
  result(await client.embeddings.create({
    model: "text-embedding-3-small",
    input: [17, 4, 9],
    dimensions: 8,
  })));

await scenario("unknown_model", async () =>
  result(await client.embeddings.create({ model: "no-such-model", input: "x" })));

await scenario("models", async () => {
  const ids = [];
  for await (const m of client.models.list())
    ids.push(m.id);
  return { ids };
});
