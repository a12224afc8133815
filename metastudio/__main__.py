from metastudio.cli import main; import sys; sys.exit(main())
