from dlrt_ref.cli import main

raise SystemExit(main())
