import sys

from attrib.bench import main

sys.exit(main())
