from vectorengine.cli import main

main()
