from llmrecipe.cli import main

raise SystemExit(main())
