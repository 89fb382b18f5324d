"""`python -m devstack.fake_llm --port 8002` (`./run fake-llm`): the scriptable fake LLM alone, as a process."""

from devstack.fake_llm import main

if __name__ == "__main__":
    raise SystemExit(main())
