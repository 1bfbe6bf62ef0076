// sdk-client: the official `openai` Node SDK (the version pinned in package-lock.json),
// unmodified, as a client of Valerie's OpenAI-compatible routes. Runs on Node 18 and later.
//
//   node sdk-client.mjs [BASE_URL] [--only stream-error]
//
// BASE_URL includes /v1 (as the SDK's baseURL does); else VALERIE_BASE_URL, else
// http://127.0.0.1:8080/v1. Other settings, from the environment:
//   VALERIE_SDK_MODEL      the model to ask for (default gpt-4o-mini)
//   VALERIE_SDK_BAD_MODEL  a model outside VALERIE_MODELS (default not-an-allowed-model)
//   VALERIE_SDK_SESSION    the X-Session-Id to use (default sdk-<pid>-<time>)
//   VALERIE_SDK_ECHO=1     the upstream is tests/fakes/fake_llm.py: answers are "echo: " +
//                          the last user message
//   OPENAI_API_KEY         the client's key (default sk-client-not-a-real-key)
//
// Cases: chat.completions.create whole (no session; a session through per-request headers,
// then through defaultHeaders, sending only the new message), streamed (joined deltas,
// the usage chunk of stream_options.include_usage), models.list(), and a model outside
// VALERIE_MODELS (APIError 400). With --only stream-error: one streamed create whose
// upstream breaks mid-way (the caller plans it): the SDK must raise an APIError.
// Prints one JSON summary on stdout; exits 1 on any mismatch, 2 on bad usage.
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const args = process.argv.slice(2);
let only = null;
const positional = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--only') only = args[++i];
  else if (args[i].startsWith('--only=')) only = args[i].slice(7);
  else positional.push(args[i]);
}
if (only !== null && only !== 'stream-error') {
  console.error(`sdk-client: unknown case ${only}`);
  process.exit(2);
}
const baseURL = positional[0] || process.env.VALERIE_BASE_URL || 'http://127.0.0.1:8080/v1';
const model = process.env.VALERIE_SDK_MODEL || 'gpt-4o-mini';
const badModel = process.env.VALERIE_SDK_BAD_MODEL || 'not-an-allowed-model';
const sid = process.env.VALERIE_SDK_SESSION || `sdk-${process.pid}-${Date.now()}`;
const echo = process.env.VALERIE_SDK_ECHO === '1';
const apiKey = process.env.OPENAI_API_KEY || 'sk-client-not-a-real-key';

const summary = {
  ok: false, node: process.version, sdk: VERSION, base_url: baseURL, model, session: sid,
  cases: {}, failures: [],
};

function expect(cond, what) {
  if (!cond) summary.failures.push(what);
  return cond;
}

function client(extra = {}) {
  // No retries: a failure must show as it is, not be hidden by the SDK's own retries.
  return new OpenAI({ apiKey, baseURL, maxRetries: 0, timeout: 30000, ...extra });
}

function wholeProblems(c, name) {
  const ok = c && c.object === 'chat.completion' && typeof c.id === 'string' &&
    c.id.startsWith('chatcmpl-') && Number.isInteger(c.created) &&
    typeof c.model === 'string' && c.model.length > 0 &&
    Array.isArray(c.choices) && c.choices.length === 1 && c.choices[0].index === 0 &&
    c.choices[0].message && c.choices[0].message.role === 'assistant' &&
    typeof c.choices[0].message.content === 'string' &&
    c.choices[0].message.content.length > 0 && c.choices[0].finish_reason === 'stop' &&
    c.usage && Number.isInteger(c.usage.prompt_tokens) &&
    Number.isInteger(c.usage.completion_tokens) &&
    c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens;
  expect(ok, `${name}: not an OpenAI chat.completion: ${JSON.stringify(c).slice(0, 300)}`);
}

async function whole(cl, messages, name, options = undefined) {
  const { data, response } = await cl.chat.completions
    .create({ model, messages }, options)
    .withResponse();
  wholeProblems(data, name);
  const content = data?.choices?.[0]?.message?.content ?? null;
  return {
    id: data?.id, model: data?.model, content, usage: data?.usage ?? null,
    status: response.status, session_turn: response.headers.get('x-session-turn'),
    request_id: response.headers.get('x-request-id'),
  };
}

async function streamed(cl, messages, name, options = undefined) {
  const stream = await cl.chat.completions.create(
    { model, messages, stream: true, stream_options: { include_usage: true } }, options);
  const out = { chunks: 0, content: '', role: null, finish_reason: null, usage: null,
    ids: [], models: [], usage_chunk_last: false, after_finish: 0 };
  let finished = false;
  for await (const chunk of stream) {
    out.chunks++;
    expect(chunk.object === 'chat.completion.chunk', `${name}: chunk object ${chunk.object}`);
    if (!out.ids.includes(chunk.id)) out.ids.push(chunk.id);
    if (!out.models.includes(chunk.model)) out.models.push(chunk.model);
    if (chunk.choices.length === 0) {
      expect(chunk.usage, `${name}: a chunk with no choices and no usage`);
      out.usage = chunk.usage ?? null;
      out.usage_chunk_last = true;
      continue;
    }
    expect(!out.usage_chunk_last, `${name}: a chunk with choices after the usage chunk`);
    const c = chunk.choices[0];
    if (out.chunks === 1) out.role = c.delta?.role ?? null;
    if (finished) out.after_finish++;
    if (typeof c.delta?.content === 'string') out.content += c.delta.content;
    if (c.finish_reason) {
      out.finish_reason = c.finish_reason;
      finished = true;
    }
  }
  expect(out.role === 'assistant', `${name}: the first delta's role is ${out.role}`);
  expect(out.finish_reason === 'stop', `${name}: finish_reason ${out.finish_reason}`);
  expect(out.after_finish === 0, `${name}: ${out.after_finish} content chunks after finish`);
  expect(out.ids.length === 1, `${name}: the chunks carry ${out.ids.length} ids`);
  expect(out.usage_chunk_last && out.usage &&
    out.usage.total_tokens === out.usage.prompt_tokens + out.usage.completion_tokens,
  `${name}: the usage chunk: ${JSON.stringify(out.usage)}`);
  expect(out.content.length > 0, `${name}: no content`);
  return out;
}

async function run(name, fn) {
  try {
    summary.cases[name] = await fn();
  } catch (e) {
    summary.cases[name] = { threw: describe(e) };
    expect(false, `${name}: threw ${describe(e).message}`);
  }
}

function describe(e) {
  return {
    name: e?.constructor?.name, message: String(e?.message ?? e), status: e?.status ?? null,
    code: e?.code ?? null, type: e?.type ?? null, api_error: e instanceof OpenAI.APIError,
  };
}

async function main() {
  if (only === 'stream-error') {
    await run('stream_error', async () => {
      const out = { content: '', chunks: 0, raised: null };
      try {
        const stream = await client().chat.completions.create(
          { model, messages: [{ role: 'user', content: 'one two three four five' }],
            stream: true });
        for await (const chunk of stream) {
          out.chunks++;
          out.content += chunk.choices[0]?.delta?.content ?? '';
        }
      } catch (e) {
        out.raised = describe(e);
      }
      expect(out.raised && out.raised.api_error,
        `stream_error: the SDK raised no APIError on a broken stream: ${JSON.stringify(out)}`);
      expect(out.chunks > 0, 'stream_error: no content before the break');
      return out;
    });
    return;
  }

  const cl = client();
  const q1 = 'hello from the sdk';
  await run('whole', async () => {
    const r = await whole(cl, [{ role: 'system', content: 'Be brief.' },
      { role: 'user', content: q1 }], 'whole');
    expect(r.session_turn === null, `whole: X-Session-Turn ${r.session_turn} without a session`);
    if (echo) expect(r.content === `echo: ${q1}`, `whole: content ${JSON.stringify(r.content)}`);
    return r;
  });

  // A session: turn 1 through a per-request header, turn 2 through defaultHeaders, each
  // sending only its new message.
  await run('session_turn_1', async () => {
    const r = await whole(cl, [{ role: 'user', content: 'my name is Ada' }], 'session_turn_1',
      { headers: { 'X-Session-Id': sid } });
    expect(r.session_turn === '1', `session_turn_1: X-Session-Turn ${r.session_turn}`);
    return r;
  });
  const scl = client({ defaultHeaders: { 'X-Session-Id': sid } });
  await run('session_turn_2', async () => {
    const r = await whole(scl, [{ role: 'user', content: 'what is my name?' }], 'session_turn_2');
    expect(r.session_turn === '2', `session_turn_2: X-Session-Turn ${r.session_turn}`);
    if (echo) {
      expect(r.content === 'echo: what is my name?', `session_turn_2: ${r.content}`);
    } else {
      expect(r.content.includes('my name is Ada'),
        `session_turn_2: the answer does not remember turn 1: ${r.content}`);
    }
    return r;
  });

  const q2 = 'stream this answer please';
  await run('stream', async () => {
    const r = await streamed(cl, [{ role: 'user', content: q2 }], 'stream');
    if (echo) expect(r.content === `echo: ${q2}`, `stream: content ${JSON.stringify(r.content)}`);
    return r;
  });
  await run('stream_session_turn_3', async () => {
    const r = await streamed(scl, [{ role: 'user', content: 'and now streamed' }],
      'stream_session_turn_3');
    if (echo) expect(r.content === 'echo: and now streamed', `stream_session_turn_3: ${r.content}`);
    else expect(r.content.includes('turn 3'), `stream_session_turn_3: ${r.content}`);
    return r;
  });
  // The same question whole and streamed gives the same answer (a deterministic upstream).
  await run('stream_matches_whole', async () => {
    const w = await whole(cl, [{ role: 'user', content: q2 }], 'stream_matches_whole');
    const s = summary.cases.stream;
    expect(s && s.content === w.content,
      `stream_matches_whole: ${JSON.stringify(s?.content)} != ${JSON.stringify(w.content)}`);
    expect(s && s.usage && JSON.stringify(s.usage) === JSON.stringify(w.usage),
      `stream_matches_whole: usage ${JSON.stringify(s?.usage)} != ${JSON.stringify(w.usage)}`);
    return { content: w.content, usage: w.usage };
  });

  await run('models', async () => {
    const ids = [];
    for await (const m of cl.models.list()) {
      expect(m.object === 'model' && typeof m.id === 'string', `models: ${JSON.stringify(m)}`);
      ids.push(m.id);
    }
    expect(ids.length > 0, 'models: an empty list');
    return { ids };
  });

  await run('model_not_allowed', async () => {
    try {
      await cl.chat.completions.create({ model: badModel,
        messages: [{ role: 'user', content: 'hi' }] });
    } catch (e) {
      const d = describe(e);
      expect(e instanceof OpenAI.APIError && e instanceof OpenAI.BadRequestError &&
        e.status === 400 && e.code === 'model_not_allowed',
      `model_not_allowed: ${JSON.stringify(d)}`);
      return d;
    }
    expect(false, 'model_not_allowed: no error raised');
    return { raised: null };
  });
}

main().then(() => {
  summary.ok = summary.failures.length === 0;
  console.log(JSON.stringify(summary, null, 2));
  process.exit(summary.ok ? 0 : 1);
}, (e) => {
  summary.failures.push(`crashed: ${e?.stack ?? e}`);
  console.log(JSON.stringify(summary, null, 2));
  process.exit(1);
});
