# llama.cpp on the same GGUF file, prompt and greedy decoding as the adiuva-llm benchmark:
# time to first token and generation tokens/s. argv: model path, max tokens, rounds; the
# ChatML prompt comes in $PROMPT.
import os, statistics, sys, time
from llama_cpp import Llama

path, max_tokens, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
prompt = os.environ["PROMPT"]
first_token, rate, generated = [], [], 0
for _ in range(rounds):
    llm.reset()
    started = time.perf_counter()
    first, count = None, 0
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1, stop=["<|im_end|>"], stream=True):
        if first is None:
            first = time.perf_counter() - started
        count += 1
    total = time.perf_counter() - started
    first_token.append(first * 1e3)
    rate.append((count - 1) / (total - first))
    generated = count
print(f"llama.cpp (llama-cpp-python): first token p50 {statistics.median(first_token):.1f} ms, "
      f"generation p50 {statistics.median(rate):.1f} tokens/s ({generated} tokens, {rounds} rounds)")
