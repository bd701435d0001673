from trapvisor.cli import main

raise SystemExit(main())
