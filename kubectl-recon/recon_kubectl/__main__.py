import sys

from recon_kubectl.cli import main

sys.exit(main())
