Feature: A shared prompt prefix is reused from cache
  A prefix cache keeps the KV of a prompt's positions after its job, so a later prompt that starts with the
  same tokens (a system prompt, the earlier turns of a conversation) prefills only the rest (M1-PREFIX-CACHE,
  performance bundle §M1). From outside that is two things: each prompt streams the tokens it streams
  without the cache, and its first token comes sooner. The cache is the worker's to switch on:
  `--worker-flag prefix_cache=ARGS` (an empty template for a worker that always reuses prefixes; the
  reference worker's `--prefix-cache` is built in); a worker that declares none is not applicable.

  Six short questions are asked after a shared prefix of 16 plain sentences (about 330 tokens of the tiny
  model's 512-position context), and again after the first two sentences only: on a random-weight model a
  long prefix hardly steers the greedy tokens, a short one does, so a position the cache loses, adds or
  takes from another prompt shows in the tokens. Each prompt runs first without the flag, then with it. With
  it, each long-prefix question runs in a round of four jobs: the question alone (almost nothing to
  prefill), the question after the 16 sentences rotated (as long, but starting like no job before), the
  first question after the prefix (which the cache may keep), then the question after the prefix. Reusing
  the prefix puts a shared-prefix job's first token near a lone question's; not reusing it, near a rotated
  one's. The check asks the median of five to save at least half of the prefix's prefill; a worker that
  prefills the prefix in under 2 ms cannot show a reuse on this model (not applicable, with the figures).

  Background:
    Given a worker serving the tiny llama Q8_0 model

  @m1 @M1-PREFIX-CACHE @model_tiny @q8_0 @needs_spawn @timed
  Scenario: Prompts that share a long prefix give the same tokens from the cache, and their first token sooner
    When I run the greedy jobs whose prompts share a prefix
    And the same model is served with the worker flag prefix_cache
    And I run them again, each beside the question alone and a prompt as long that shares no prefix
    Then each shared-prefix job streams the tokens it streamed without the cache
    And the shared-prefix jobs' first token comes sooner by at least half of the prefix's prefill
