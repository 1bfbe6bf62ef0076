/* agent_loop: a chat turn's model calls, running the agent tools the model asks for in between. */
#ifndef VALERIE_AGENT_LOOP_H
#define VALERIE_AGENT_LOOP_H

#include "provider.h"

struct handler_ctx;
struct json_object;

/* What the loop adds to a turn. The caller owns and frees it (agent_turn_free). */
struct agent_turn {
	struct json_object *steps;   /* messages between the user's and the final answer:
	                                assistant tool_calls, then the tool results; or NULL */
	struct json_object *calls;   /* for the answer: [{id, name, arguments, is_error,
	                                content}] in the order they ran; or NULL */
	int steps_taken;             /* model calls that asked for tools */
	long long agent_ms;          /* time spent on the agents (tools/list, tools/call) */
};

void agent_turn_free(struct agent_turn *at);

/*
 * Answers `req` like provider_complete, but when `agents` is set the tools of
 * the enabled agents are offered (unless the request brings its own) and
 * while the model asks for them they are run (several at once when it asks
 * for several) and the results sent back, for at most VALERIE_AGENT_MAX_STEPS
 * steps; then the model is asked once more, with tool_choice "none", for a
 * final answer.
 * A dead, slow or open-circuit agent is a tool result saying so, never a
 * failed turn. `req->messages` grows with the steps. Usage is summed over the
 * calls; `res` holds the final answer.
 * With `idem` (the turn's Idempotency-Key scoped to the caller, borrowed; or
 * NULL) each tool call the agent answered is recorded in the store's cache,
 * and a call that ran under the same key (the same tool and arguments, the
 * same n-th time in the turn) is not run again: its recorded result is used.
 * So a turn that failed after a tool ran (say the next model call did) and
 * is sent again does not, say, book twice. A failing store never fails the
 * turn: the call then runs.
 */
enum provider_status agent_loop_complete(struct handler_ctx *ctx, int agents,
    const char *idem, struct llm_request *req, struct llm_result *res,
    struct agent_turn *at);

#endif
