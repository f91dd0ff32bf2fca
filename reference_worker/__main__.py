"""`python -m reference_worker --worker-id UUID --model /abs/model.gguf --gpu-device N --port P`."""

from reference_worker.worker import main

raise SystemExit(main())
