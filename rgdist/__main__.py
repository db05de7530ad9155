from rgdist.cli import main

raise SystemExit(main())
