"""``domainnet``: DomainNet, 6 domains = 6 tasks, 345 classes (586,575 images, cleaned version).

Peng, Bai, Xia, Huang, Saenko & Wang, "Moment matching for multi-source domain adaptation",
ICCV 2019. A dataset of the GTTN paper (VGG-19 fc7 / pool5 features).
"""

from __future__ import annotations

from .download import domain_archives
from .images import ImageDatasetSource
from .source import register_source

_SERVER = "http://csr.bu.edu/ftp/visda/2019/multi-source/"

# Label order of the public image lists (alphabetical, upper case first as the lists have it).
CLASSES = tuple("""
aircraft_carrier airplane alarm_clock ambulance angel animal_migration ant anvil apple arm asparagus axe backpack
banana bandage barn baseball baseball_bat basket basketball bat bathtub beach bear beard bed bee belt bench bicycle
binoculars bird birthday_cake blackberry blueberry book boomerang bottlecap bowtie bracelet brain bread bridge
broccoli broom bucket bulldozer bus bush butterfly cactus cake calculator calendar camel camera camouflage campfire
candle cannon canoe car carrot castle cat ceiling_fan cello cell_phone chair chandelier church circle clarinet clock
cloud coffee_cup compass computer cookie cooler couch cow crab crayon crocodile crown cruise_ship cup diamond
dishwasher diving_board dog dolphin donut door dragon dresser drill drums duck dumbbell ear elbow elephant envelope
eraser eye eyeglasses face fan feather fence finger fire_hydrant fireplace firetruck fish flamingo flashlight
flip_flops floor_lamp flower flying_saucer foot fork frog frying_pan garden garden_hose giraffe goatee golf_club
grapes grass guitar hamburger hammer hand harp hat headphones hedgehog helicopter helmet hexagon hockey_puck
hockey_stick horse hospital hot_air_balloon hot_dog hot_tub hourglass house house_plant hurricane ice_cream jacket
jail kangaroo key keyboard knee knife ladder lantern laptop leaf leg light_bulb lighter lighthouse lightning line
lion lipstick lobster lollipop mailbox map marker matches megaphone mermaid microphone microwave monkey moon
mosquito motorbike mountain mouse moustache mouth mug mushroom nail necklace nose ocean octagon octopus onion oven
owl paintbrush paint_can palm_tree panda pants paper_clip parachute parrot passport peanut pear peas pencil penguin
piano pickup_truck picture_frame pig pillow pineapple pizza pliers police_car pond pool popsicle postcard potato
power_outlet purse rabbit raccoon radio rain rainbow rake remote_control rhinoceros rifle river roller_coaster
rollerskates sailboat sandwich saw saxophone school_bus scissors scorpion screwdriver sea_turtle see_saw shark sheep
shoe shorts shovel sink skateboard skull skyscraper sleeping_bag smiley_face snail snake snorkel snowflake snowman
soccer_ball sock speedboat spider spoon spreadsheet square squiggle squirrel stairs star steak stereo stethoscope
stitches stop_sign stove strawberry streetlight string_bean submarine suitcase sun swan sweater swing_set sword
syringe table teapot teddy-bear telephone television tennis_racquet tent The_Eiffel_Tower The_Great_Wall_of_China
The_Mona_Lisa tiger toaster toe toilet tooth toothbrush toothpaste tornado tractor traffic_light train tree triangle
trombone truck trumpet t-shirt umbrella underwear van vase violin washing_machine watermelon waterslide whale wheel
windmill wine_bottle wine_glass wristwatch yoga zebra zigzag
""".split())


@register_source
class DomainNet(ImageDatasetSource):
    name = "domainnet"
    folder = "domainnet"
    task_folders = {d: d for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")}
    classes = CLASSES
    expected_images = {"clipart": 48129, "infograph": 51605, "painting": 72266, "quickdraw": 172500,
                       "real": 172947, "sketch": 69128}
    downloads = domain_archives({  # the cleaned clipart and painting are under groundtruth/
        "clipart": _SERVER + "groundtruth/clipart.zip", "infograph": _SERVER + "infograph.zip",
        "painting": _SERVER + "groundtruth/painting.zip", "quickdraw": _SERVER + "quickdraw.zip",
        "real": _SERVER + "real.zip", "sketch": _SERVER + "sketch.zip",
    }, ".zip")
    licence = "fair use for research (see http://ai.bu.edu/M3SDA/)"
    how_to_get = (
        f"Get the six domain zips from {_SERVER} (cleaned clipart and painting under groundtruth/; "
        "about 20 GB) and unpack them as <data-dir>/domainnet/<domain>/<class>/*.jpg. "
        "See datasets/domainnet/README.md."
    )
